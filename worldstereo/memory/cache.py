"""The 3D cache (GGM): one global coloured point cloud, grown by Sim(3)-aligned, voxel-deduplicated merges.

Every point remembers which update added it (``sources`` indexes ``names``). A merge keeps the
points already in the cache and adds only the new points that fall into empty voxels, so merging
overlapping reconstructions repeatedly keeps the cloud bounded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from worldstereo.errors import InvalidInputError
from worldstereo.geometry.align import Sim3, robust_umeyama, umeyama
from worldstereo.geometry.camera import Camera
from worldstereo.geometry.ply import ply_bytes, read_ply
from worldstereo.geometry.render import DEFAULT_EDGE_THRESHOLD, CacheRender, depth_edge_mask, render_points
from worldstereo.geometry.voxel import new_voxel_indices_unchecked, voxel_downsample

_FORMAT = "worldstereo.cache3d/1"
_CLOUD = "cache.ply"
_MANIFEST = "cache.json"

Alignment = Literal["none", "sim3", "robust"]


@dataclass(frozen=True)
class UpdateReport:
    """What one merge did. ``transform`` maps the new reconstruction into the cache (identity when unaligned)."""

    source_name: str
    source_id: int
    transform: Sim3
    correspondences: int
    inliers: int
    rmse: float
    points_in: int
    points_added: int
    points_total: int


class Cache3D:
    """Points ``[P,3]``, colours ``[P,3]`` (float in [0, 1]), source ids ``[P]`` into ``names``, voxel size."""

    def __init__(self, points: Tensor, colors: Tensor, sources: Tensor, names: list[str], voxel_size: float) -> None:
        if points.ndim != 2 or points.shape[1] != 3 or colors.shape != points.shape or sources.shape != points.shape[:1]:
            raise InvalidInputError(
                f"need points [P,3], colors [P,3], sources [P]; got {tuple(points.shape)}, "
                f"{tuple(colors.shape)}, {tuple(sources.shape)}"
            )
        if len(points) == 0:
            raise InvalidInputError("a 3D cache needs at least one point")
        if not (math.isfinite(voxel_size) and voxel_size > 0):
            raise InvalidInputError(f"voxel size must be positive, got {voxel_size}")
        if int(sources.min()) < 0 or int(sources.max()) >= len(names):
            raise InvalidInputError("source ids must index the names list")
        self._points, self._colors, self._sources = points, colors, sources.long()
        self._names, self._voxel_size = list(names), float(voxel_size)

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_points(
        cls, points: Tensor, colors: Tensor, voxel_size: float, *, source_name: str = "input"
    ) -> Cache3D:
        """A cache of one voxel-downsampled cloud (non-finite points dropped)."""
        points, colors = _finite(points, _float_colors(colors))
        points, colors, _ = voxel_downsample(points, colors, voxel_size, keep="first")
        sources = torch.zeros(len(points), dtype=torch.long, device=points.device)
        return cls(points, colors, sources, [source_name], voxel_size)

    @classmethod
    def from_depth(
        cls,
        image: Tensor,
        depth: Tensor,
        camera: Camera,
        *,
        voxel_size: float | None = None,
        voxel_ratio: float = 0.002,
        drop_edges: bool = True,
        edge_threshold: float = DEFAULT_EDGE_THRESHOLD,
        source_name: str = "input",
    ) -> Cache3D:
        """Back-project an image ``[H,W,3]`` with z-depth ``[H,W]`` (Eq. 1); voxel size defaults to ``voxel_ratio`` x median depth."""
        if len(camera) != 1 or depth.shape != (camera.height, camera.width) or image.shape[:2] != depth.shape:
            raise InvalidInputError(
                f"need one camera with image [H,W,3] and depth [H,W] of its size {camera.height}x{camera.width}"
            )
        valid = torch.isfinite(depth) & (depth > 0)
        if not valid.any():
            raise InvalidInputError("the depth map has no valid pixel")
        size = voxel_size if voxel_size is not None else voxel_ratio * float(depth[valid].median())
        if drop_edges:
            valid &= ~depth_edge_mask(depth[None], edge_threshold)[0]
        depth = torch.where(valid, depth, torch.zeros_like(depth))
        points = camera.backproject(depth[None].to(camera.dtype))[0][valid]
        return cls.from_points(points, image[valid], size, source_name=source_name)

    # --- state --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._points)

    @property
    def points(self) -> Tensor:
        return self._points

    @property
    def colors(self) -> Tensor:
        return self._colors

    @property
    def sources(self) -> Tensor:
        return self._sources

    @property
    def names(self) -> list[str]:
        return list(self._names)

    @property
    def voxel_size(self) -> float:
        return self._voxel_size

    def to(self, device: torch.device | str) -> Cache3D:
        """The same cache on ``device`` (itself when already there)."""
        if self._points.device == torch.device(device):
            return self
        return Cache3D(self._points.to(device), self._colors.to(device), self._sources.to(device), self._names,
                       self._voxel_size)

    def points_from(self, source_name: str) -> Tensor:
        """Mask ``[P]`` of the points added by ``source_name``."""
        if source_name not in self._names:
            return torch.zeros(len(self), dtype=torch.bool, device=self._points.device)
        return self._sources == self._names.index(source_name)

    # --- update -------------------------------------------------------------------------------
    def update(
        self,
        points: Tensor,
        colors: Tensor,
        source_name: str,
        *,
        anchor_src: Tensor | None = None,
        anchor_dst: Tensor | None = None,
        align: Alignment = "sim3",
        robust_threshold: float | None = None,
    ) -> UpdateReport:
        """Align a new reconstruction by Sim(3) on anchor pairs (its points -> cache points), then merge it.

        ``align="sim3"`` is a least-squares Umeyama fit, ``"robust"`` a RANSAC-style fit with inlier
        refinement, ``"none"`` merges the points as given.
        """
        if not source_name:
            raise InvalidInputError("an update needs a source name")
        points, colors = _finite(points, _float_colors(colors))
        transform, inliers, rmse = Sim3.identity(dtype=self._points.dtype, device=self._points.device), 0, math.nan
        pairs = 0 if anchor_src is None else len(anchor_src)
        if align != "none":
            if anchor_src is None or anchor_dst is None or anchor_src.shape != anchor_dst.shape or pairs < 3:
                raise InvalidInputError(f"{align} alignment needs at least 3 anchor pairs of equal shape")
            src, dst = anchor_src.to(self._points), anchor_dst.to(self._points)
            if align == "robust":
                transform, mask = robust_umeyama(src, dst, threshold=robust_threshold)
            else:
                transform, mask = umeyama(src, dst), torch.ones(len(src), dtype=torch.bool, device=src.device)
            inliers = int(mask.sum())
            rmse = float((transform.apply(src[mask]) - dst[mask]).square().sum(dim=-1).mean().sqrt())
            points = transform.apply(points.to(self._points))
        if source_name not in self._names:
            self._names.append(source_name)
        source_id = self._names.index(source_name)
        points, colors = points.to(self._points.device), colors.to(self._colors.device)
        if torch.finfo(points.dtype).bits > torch.finfo(self._points.dtype).bits:
            points = points.to(self._points.dtype)  # voxels of the points as stored
        kept = new_voxel_indices_unchecked(self._points, points, self._voxel_size)  # the cache holds finite points only
        self._points = torch.cat([self._points, points[kept].to(self._points)])
        self._colors = torch.cat([self._colors, colors[kept].to(self._colors)])
        self._sources = torch.cat([self._sources, self._sources.new_full((len(kept),), source_id)])
        added = len(kept)
        return UpdateReport(source_name, source_id, transform, pairs, inliers, rmse, len(points), added, len(self))

    # --- rendering ----------------------------------------------------------------------------
    def render(self, cameras: Camera, **render_kwargs: Any) -> CacheRender:
        """Splat the coloured cache into ``cameras`` (``render_kwargs`` go to ``render_points``)."""
        return render_points(self._points, self._colors, cameras, **render_kwargs)

    def render_with_xyz(self, cameras: Camera, **render_kwargs: Any) -> tuple[CacheRender, CacheRender]:
        """One splat pass giving the colour render and the world-XYZ render (pointmaps) of ``cameras``."""
        palette = torch.cat([self._colors.float(), self._points.float()], dim=1)
        both = render_points(self._points, palette, cameras, **render_kwargs)  # rgb: channel views of one tensor
        return CacheRender(both.rgb[..., :3], both.depth, both.mask), CacheRender(both.rgb[..., 3:], both.depth, both.mask)

    # --- persistence --------------------------------------------------------------------------
    def save(self, directory: str | Path) -> list[Path]:
        """Write ``cache.ply`` (positions, float colours, int ``source`` per point) and ``cache.json``; returns the files."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        points, colors = self._points.detach().cpu().numpy(), self._colors.detach().cpu().numpy()
        columns = {"x": points[:, 0], "y": points[:, 1], "z": points[:, 2], "red": colors[:, 0],
                   "green": colors[:, 1], "blue": colors[:, 2],
                   "source": self._sources.detach().cpu().numpy().astype(np.int32)}
        paths = [directory / _CLOUD, directory / _MANIFEST]
        paths[0].write_bytes(ply_bytes(columns, comment="worldstereo 3D cache"))
        manifest = {"format": _FORMAT, "names": self._names, "voxel_size": self._voxel_size}
        paths[1].write_text(json.dumps(manifest, indent=1))
        return paths

    @classmethod
    def load(cls, directory: str | Path) -> Cache3D:
        directory = Path(directory)
        manifest = json.loads((directory / _MANIFEST).read_text())
        if manifest.get("format") != _FORMAT:
            raise InvalidInputError(f"not a 3D cache: format {manifest.get('format')!r}")
        columns = read_ply((directory / _CLOUD).read_bytes())
        if not {"x", "y", "z", "red", "green", "blue", "source"} <= set(columns):
            raise InvalidInputError(f"{directory / _CLOUD} is not a 3D cache point cloud")
        points = torch.from_numpy(np.stack([columns["x"], columns["y"], columns["z"]], axis=1))
        colors = torch.from_numpy(np.stack([columns["red"], columns["green"], columns["blue"]], axis=1))
        sources = torch.from_numpy(columns["source"].astype(np.int64))
        return cls(points, colors, sources, list(manifest["names"]), float(manifest["voxel_size"]))


def overlap_correspondences(
    cache: Cache3D,
    new_points_map: Tensor,
    cameras: Camera,
    valid: Tensor,
    *,
    radius: int = 0,
    max_pairs: int = 100_000,
    edge_threshold: float = DEFAULT_EDGE_THRESHOLD,
    seed: int = 0,
    **render_kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """Anchor pairs for ``update``: new points ``[V,H,W,3]`` and the cache's points rendered at the same pixels.

    The cache is rendered with its XYZ as colour into ``cameras`` (splat ``radius`` 0 by default, so
    a pixel pairs only with a point projecting inside it, without the near-side bias of wider
    splats); pixels valid in the new map, covered by the cache and off the rendered depth edges
    pair up. Points seen through holes of a sparse cache make outlier pairs: prefer
    ``align="robust"``. At most ``max_pairs`` pairs are kept (a seeded uniform subset).
    Returns ``(src [K,3], dst [K,3])``.
    """
    shape = (len(cameras), cameras.height, cameras.width)
    if new_points_map.shape != (*shape, 3) or valid.shape != shape:
        raise InvalidInputError(
            f"need points map {(*shape, 3)} and valid mask {shape}, got "
            f"{tuple(new_points_map.shape)} and {tuple(valid.shape)}"
        )
    rendered = render_points(cache.points, cache.points, cameras, radius=radius, **render_kwargs)
    both = valid & rendered.covered & ~depth_edge_mask(rendered.depth, edge_threshold)
    src, dst = new_points_map[both], rendered.rgb[both]
    if len(src) > max_pairs:
        generator = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(src), generator=generator)[:max_pairs].to(src.device)
        src, dst = src[pick], dst[pick]
    return src, dst


def _finite(points: Tensor, colors: Tensor) -> tuple[Tensor, Tensor]:
    if points.ndim != 2 or points.shape[1] != 3 or colors.shape != points.shape:
        raise InvalidInputError(f"need points [P,3] and colors [P,3], got {tuple(points.shape)}, {tuple(colors.shape)}")
    keep = torch.isfinite(points).all(dim=-1)
    if bool(keep.all()):
        return points, colors
    return points[keep], colors[keep]


def _float_colors(colors: Tensor) -> Tensor:
    if colors.dtype.is_floating_point:
        return colors
    if colors.dtype != torch.uint8:
        raise InvalidInputError(f"integer colours must be uint8, got {colors.dtype}")
    return colors.to(torch.float32) / 255.0
