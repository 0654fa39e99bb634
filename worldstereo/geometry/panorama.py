"""Equirectangular panoramas <-> perspective views, and the panoramic point cloud (the initial 3D cache).

Views sit at the panorama centre (the world origin of the z-up world, see ``spherical``). View
``(pitch, yaw)`` looks along ``(cos p cos y, cos p sin y, sin p)``: yaw is the longitude of its
optical axis (counter-clockwise seen from above, yaw 0 looks along +x), pitch is positive upwards,
image up points towards +z. Views are ordered pitch-major (``pitches_deg`` outer, yaws inner).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from worldstereo.config import PanoramaSettings
from worldstereo.errors import InvalidInputError
from worldstereo.geometry.camera import Camera, look_at
from worldstereo.geometry.render import DEFAULT_EDGE_THRESHOLD, depth_edge_mask
from worldstereo.geometry.spherical import WORLD_UP, directions_to_equirect, equirect_directions

_CHUNK = 1 << 22


@dataclass(frozen=True)
class PanoramaViews:
    """Perspective views split from a panorama; ``depth`` (z-depth) only when a distance map was given."""

    images: Tensor
    cameras: Camera
    yaws_deg: Tensor
    pitches_deg: Tensor
    depth: Tensor | None = None

    def __len__(self) -> int:
        return len(self.cameras)


def panorama_cameras(
    settings: PanoramaSettings, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> tuple[Camera, Tensor, Tensor]:
    """The split cameras at the origin and their yaw / pitch angles in degrees (each ``[V]``)."""
    if settings.num_yaws < 1 or not settings.pitches_deg:
        raise InvalidInputError("a panorama split needs at least one yaw and one pitch")
    yaws = torch.arange(settings.num_yaws, dtype=dtype, device=device) * (360.0 / settings.num_yaws)
    pitches = torch.tensor(settings.pitches_deg, dtype=dtype, device=device)
    pitch, yaw = (g.reshape(-1) for g in torch.meshgrid(pitches, yaws, indexing="ij"))
    p, y = torch.deg2rad(pitch), torch.deg2rad(yaw)
    forward = torch.stack([torch.cos(p) * torch.cos(y), torch.cos(p) * torch.sin(y), torch.sin(p)], dim=-1)
    up = torch.tensor(WORLD_UP, dtype=dtype, device=device)
    c2w = look_at(torch.zeros_like(forward), forward, up)
    cameras = Camera.from_fov(c2w, settings.view_height, settings.view_width, settings.fov_x_deg, settings.fov_y_deg)
    return cameras, yaw, pitch


def split_panorama(rgb: Tensor, settings: PanoramaSettings, distance: Tensor | None = None) -> PanoramaViews:
    """Resample an equirectangular ``[H,W,3]`` image (and optional distance ``[H,W]``) into perspective views.

    Colours are interpolated bilinearly with horizontal wrap-around; distances take the nearest
    sample (no blending across depth edges) and are converted to z-depth along each view's axis
    (non-finite distances stay non-finite). Integer images come back as float32 in [0, 1].
    """
    rgb = _as_float_image(rgb, 3)
    if distance is not None and distance.shape != rgb.shape[:2]:
        raise InvalidInputError(f"distance must be {tuple(rgb.shape[:2])}, got {tuple(distance.shape)}")
    cameras, yaws, pitches = panorama_cameras(settings, device=rgb.device)
    height, width = rgb.shape[:2]
    per_chunk = max(1, _CHUNK // (cameras.height * cameras.width))
    images, depths = [], []
    for start in range(0, len(cameras), per_chunk):
        rays = cameras[start : start + per_chunk].ray_directions()
        norm = rays.norm(dim=-1)
        uv = directions_to_equirect(rays / norm[..., None], height, width)
        images.append(_sample_equirect(rgb, uv, bilinear=True))
        if distance is not None:
            depths.append(_sample_equirect(distance[..., None], uv, bilinear=False)[..., 0] / norm.to(distance.dtype))
    return PanoramaViews(
        images=torch.cat(images),
        cameras=cameras,
        yaws_deg=yaws,
        pitches_deg=pitches,
        depth=torch.cat(depths) if distance is not None else None,
    )


def panorama_point_cloud(
    rgb: Tensor,
    distance: Tensor,
    *,
    stride: int = 1,
    center: Tensor | None = None,
    drop_edges: bool = True,
    edge_threshold: float = DEFAULT_EDGE_THRESHOLD,
) -> tuple[Tensor, Tensor]:
    """World points ``[P,3]`` and colours ``[P,3]`` from an equirectangular image and its distance map.

    Pixels with non-finite or non-positive distance are skipped; with ``drop_edges`` so are pixels on
    depth discontinuities (``depth_edge_mask`` at ``edge_threshold``). ``center`` defaults to the origin.
    """
    rgb = _as_float_image(rgb, 3)
    if distance.shape != rgb.shape[:2]:
        raise InvalidInputError(f"distance must be {tuple(rgb.shape[:2])}, got {tuple(distance.shape)}")
    if stride < 1:
        raise InvalidInputError("stride must be >= 1")
    valid = torch.isfinite(distance) & (distance > 0)
    if drop_edges:
        valid &= ~depth_edge_mask(distance[None], edge_threshold)[0]
    height, width = distance.shape
    dirs = equirect_directions(height, width, dtype=distance.dtype, device=distance.device)
    take = (slice(None, None, stride), slice(None, None, stride))
    valid = valid[take]
    points = dirs[take][valid] * distance[take][valid][:, None]
    if center is not None:
        points = points + center.to(points)
    return points, rgb[take][valid]


def views_to_equirect(images: Tensor, cameras: Camera, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Project perspective views ``[V,h,w,C]`` sharing one centre back to an equirect image ``[H,W,C]``.

    Each panorama pixel is sampled bilinearly from the view whose optical axis is closest to its
    direction among the views that see it; ``coverage`` ``[H,W]`` marks pixels seen by any view
    (the others are 0).
    """
    if images.shape[:3] != (len(cameras), cameras.height, cameras.width):
        raise InvalidInputError(
            f"images must be {(len(cameras), cameras.height, cameras.width)} x C, got {tuple(images.shape)}"
        )
    images = _as_float_image(images, 4)
    dirs = equirect_directions(height, width, dtype=cameras.dtype, device=cameras.device).reshape(-1, 3)
    flat = images.reshape(-1, images.shape[-1])
    per_chunk = max(1, _CHUNK // len(cameras))
    colours, covered = [], []
    for start in range(0, len(dirs), per_chunk):
        uv, z = cameras.project(dirs[start : start + per_chunk] + cameras.centers[0])
        u, v = uv[..., 0], uv[..., 1]
        sees = (z > 0) & (u >= 0) & (u <= cameras.width) & (v >= 0) & (v <= cameras.height)
        best = torch.where(sees, z, torch.full_like(z, -math.inf)).argmax(dim=0)
        pick = uv.gather(0, best[None, :, None].expand(1, -1, 2))[0]
        base = best * (cameras.height * cameras.width)
        seen = sees.any(dim=0)
        sampled = _bilinear(flat, base, pick, cameras.height, cameras.width, wrap=False)
        colours.append(torch.where(seen[:, None], sampled, torch.zeros_like(sampled)))
        covered.append(seen)
    return (
        torch.cat(colours).reshape(height, width, -1),
        torch.cat(covered).reshape(height, width),
    )


def _sample_equirect(image: Tensor, uv: Tensor, *, bilinear: bool) -> Tensor:
    """Sample ``[H,W,C]`` at continuous pixel coords ``[...,2]``; columns wrap, rows clamp."""
    height, width = image.shape[:2]
    if bilinear:
        base = torch.zeros(uv.shape[:-1], dtype=torch.long, device=uv.device)
        return _bilinear(image.reshape(-1, image.shape[-1]), base, uv, height, width, wrap=True)
    col = torch.floor(uv[..., 0]).long() % width
    row = torch.floor(uv[..., 1]).long().clamp(0, height - 1)
    return image[row, col]


def _bilinear(flat: Tensor, base: Tensor, uv: Tensor, height: int, width: int, *, wrap: bool) -> Tensor:
    """Bilinear samples of images stacked as ``[N*H*W, C]``; ``base`` is each sample's image offset."""
    x, y = uv[..., 0] - 0.5, (uv[..., 1] - 0.5).clamp(0, height - 1)
    x = x if wrap else x.clamp(0, width - 1)
    x0, y0 = torch.floor(x), torch.floor(y)
    wx, wy = (x - x0).to(flat.dtype)[..., None], (y - y0).to(flat.dtype)[..., None]
    c0, r0 = x0.long(), y0.long()
    c0, c1 = (c0 % width, (c0 + 1) % width) if wrap else (c0, (c0 + 1).clamp(max=width - 1))
    r1 = (r0 + 1).clamp(max=height - 1)

    def at(r: Tensor, c: Tensor) -> Tensor:
        return flat[base + r * width + c]

    top = at(r0, c0) * (1 - wx) + at(r0, c1) * wx
    bottom = at(r1, c0) * (1 - wx) + at(r1, c1) * wx
    return top * (1 - wy) + bottom * wy


def _as_float_image(image: Tensor, ndim: int) -> Tensor:
    if image.ndim != ndim:
        raise InvalidInputError(f"expected a {ndim}-d image tensor with a trailing channel axis, got {tuple(image.shape)}")
    if image.dtype.is_floating_point:
        return image
    if image.dtype != torch.uint8:
        raise InvalidInputError(f"integer images must be uint8, got {image.dtype}")
    return image.to(torch.float32) / 255.0
