"""Panoramic depth from perspective predictions, as MoGe does it: 12 icosahedron views, merged by log-scales.

The equirectangular image (conventions of ``worldstereo.geometry.spherical``) is resampled into 12
square views at 90 x 90 deg looking at the vertices of an icosahedron; their optical axes are 63.4 deg
apart, so the views cover the sphere with wide overlaps. A monocular model predicts each view on its
own, which leaves every view with a scale of its own. The views' distances are resampled onto the
panorama grid, one log-scale per view is solved by least squares over all overlapping pixels, and the
rescaled views are blended with weights that fade to zero at the view borders (no seams).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from worldstereo.errors import InvalidInputError
from worldstereo.geometry.camera import Camera, look_at
from worldstereo.geometry.spherical import WORLD_UP, directions_to_equirect, equirect_directions

ICOSAHEDRON_FOV_DEG = 90.0
MAX_VIEW_SIZE = 512  # MoGe's split resolution
MIN_VIEW_SIZE = 32
_CHUNK = 1 << 22  # view x pixel samples at once
_VALID_TAPS = 1 - 1e-6  # a bilinear sample is valid only when all its taps are
_MIN_BLEND_WEIGHT = 1e-6


@dataclass(frozen=True)
class MergedPanorama:
    """Euclidean distance ``[H,W]`` (0 where no view looks, +inf where no view found a surface) and the
    per-view log-scales ``[V]`` applied to the predictions (view 0's is 0)."""

    distance: Tensor
    log_scales: Tensor


@dataclass(frozen=True)
class _Samples:
    """The views' log-distances at a chunk of ``P`` panorama pixels."""

    log_distance: Tensor  # [V,P], 0 where not valid
    valid: Tensor  # [V,P] the view sees the pixel and predicted a surface there
    covered: Tensor  # [V,P] the pixel falls inside the view
    feather: Tensor  # [V,P] blend weight, 1 on the optical axis, 0 on the image border
    area: Tensor  # [P] solid angle of the pixel relative to the equator, cos(latitude)


def icosahedron_directions(*, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
    """The 12 unit vertices ``[12,3]`` of an icosahedron: cyclic permutations of ``(0, ±1, ±φ)``."""
    phi = (1 + math.sqrt(5)) / 2
    base = torch.tensor([[0.0, a, b * phi] for a in (1, -1) for b in (1, -1)], dtype=dtype, device=device)
    vertices = torch.cat([base, base.roll(1, dims=1), base.roll(2, dims=1)])
    return vertices / vertices.norm(dim=-1, keepdim=True)


def icosahedron_cameras(
    size: int, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> Camera:
    """12 square ``size x size`` cameras at the origin with a 90 deg field of view, looking at the vertices.

    No vertex is vertical, so every view keeps image up towards world +z.
    """
    forward = icosahedron_directions(dtype=dtype, device=device)
    up = torch.tensor(WORLD_UP, dtype=dtype, device=device)
    c2w = look_at(torch.zeros_like(forward), forward, up)
    return Camera.from_fov(c2w, size, size, ICOSAHEDRON_FOV_DEG)


def view_size(panorama_width: int) -> int:
    """Side of the split views: the panorama's resolution at the equator (a 90 deg view spans ``W/4``
    columns), between ``MIN_VIEW_SIZE`` and MoGe's ``MAX_VIEW_SIZE``."""
    return max(MIN_VIEW_SIZE, min(MAX_VIEW_SIZE, panorama_width // 4))


def equirect_to_views(image: Tensor, cameras: Camera) -> Tensor:
    """Bilinear resampling of an equirectangular ``[H,W,C]`` float image into ``[V,h,w,C]`` views at its centre."""
    if image.ndim != 3 or not image.dtype.is_floating_point:
        raise InvalidInputError(f"panorama must be a float [H,W,C] image, got {image.dtype} {tuple(image.shape)}")
    height, width = image.shape[:2]
    wrapped = torch.cat([image[:, -1:], image, image[:, :1]], dim=1)  # one column each side: longitude wraps
    source = wrapped.permute(2, 0, 1)[None]
    per_chunk = max(1, _CHUNK // (cameras.height * cameras.width))
    views = []
    for start in range(0, len(cameras), per_chunk):
        rays = cameras[start : start + per_chunk].ray_directions()
        uv = directions_to_equirect(rays / rays.norm(dim=-1, keepdim=True), height, width)
        grid = torch.stack([(uv[..., 0] + 1) / (width + 2) * 2 - 1, uv[..., 1] / height * 2 - 1], dim=-1)
        flat = grid.reshape(1, -1, 1, 2).to(image.dtype)
        sampled = F.grid_sample(source, flat, mode="bilinear", padding_mode="border", align_corners=False)
        views.append(sampled[0, :, :, 0].T.reshape(*rays.shape[:3], -1))
    return torch.cat(views)


def merge_view_distances(distance: Tensor, cameras: Camera, height: int, width: int) -> MergedPanorama:
    """Merge per-view distances ``[V,h,w]`` (+inf or 0 where a view found no surface) into one ``H x W`` panorama.

    Each view ``v`` gets a log-scale ``s_v`` minimising, over every panorama pixel ``p`` seen validly by
    two views ``u, v`` and weighted by the pixel's solid angle ``a_p``,
    ``E(s) = Σ_{u<v} Σ_p a_p (log d_v(p) + s_v - log d_u(p) - s_u)²``. Its normal equations are a graph
    Laplacian system ``L s = b`` built from two ``[V,V]`` moment matrices accumulated over pixel chunks;
    view 0 is the gauge (``s_0 = 0``, so its scale — MoGe-2's metric estimate — carries over), and views
    not connected to it by overlaps keep the minimum-norm solution. The rescaled log-distances are then
    averaged with the border-feathering weights of ``_Samples``.
    """
    if distance.shape != (len(cameras), cameras.height, cameras.width):
        raise InvalidInputError(
            f"distance must be {(len(cameras), cameras.height, cameras.width)}, got {tuple(distance.shape)}"
        )
    cameras = cameras.to(distance.device, torch.float64)
    log_distance, valid = _log_distance(distance.to(torch.float64))
    overlap = torch.zeros(len(cameras), len(cameras), dtype=torch.float64, device=distance.device)
    moments = torch.zeros_like(overlap)
    for samples in _sample_chunks(log_distance, valid, cameras, height, width):
        seen = samples.valid.to(torch.float64)
        overlap += (seen * samples.area) @ seen.T
        moments += (seen * samples.area * samples.log_distance) @ seen.T
    log_scales = solve_log_scales(overlap, moments)

    merged = []
    for samples in _sample_chunks(log_distance, valid, cameras, height, width):
        weight = samples.valid * samples.feather.clamp_min(_MIN_BLEND_WEIGHT)
        total = weight.sum(dim=0)
        mean = (weight * (samples.log_distance + log_scales[:, None])).sum(dim=0) / total.clamp_min(_MIN_BLEND_WEIGHT)
        no_surface = torch.where(samples.covered.any(dim=0), torch.full_like(mean, math.inf), torch.zeros_like(mean))
        merged.append(torch.where(total > 0, mean.exp(), no_surface))
    return MergedPanorama(torch.cat(merged).reshape(height, width), log_scales)


def solve_log_scales(overlap: Tensor, moments: Tensor) -> Tensor:
    """Per-view log-scales ``[V]`` with ``s_0 = 0`` from the overlap and moment matrices ``[V,V]``.

    ``overlap[u,v] = Σ_p a_p m_u m_v`` and ``moments[u,v] = Σ_p a_p m_u m_v log d_u`` (``m`` validity).
    Setting ``∂E/∂s_k = 0`` gives ``Σ_u overlap[k,u] (s_k - s_u) = -Σ_u (moments[k,u] - moments[u,k])``.
    """
    laplacian = torch.diag(overlap.sum(dim=1)) - overlap
    rhs = -(moments - moments.T).sum(dim=1)
    log_scales = torch.zeros_like(rhs)
    log_scales[1:] = torch.linalg.pinv(laplacian[1:, 1:]) @ rhs[1:]
    return log_scales


def _log_distance(distance: Tensor) -> tuple[Tensor, Tensor]:
    valid = torch.isfinite(distance) & (distance > 0)
    return torch.where(valid, distance, 1.0).log(), valid


def _sample_chunks(
    log_distance: Tensor, valid: Tensor, cameras: Camera, height: int, width: int
) -> Iterator[_Samples]:
    """The views resampled onto the panorama pixels, a chunk of pixels at a time (row-major)."""
    directions = equirect_directions(height, width, dtype=torch.float64, device=log_distance.device).reshape(-1, 3)
    maps = torch.stack([log_distance, valid.to(torch.float64)], dim=1)  # [V,2,h,w]
    per_chunk = max(1, _CHUNK // len(cameras))
    for start in range(0, len(directions), per_chunk):
        chunk = directions[start : start + per_chunk]
        uv, z = cameras.project(chunk)
        x = uv[..., 0] / cameras.width * 2 - 1  # [-1, 1] across the image, pixel edges at ±1
        y = uv[..., 1] / cameras.height * 2 - 1
        covered = (z > 0) & (x.abs() <= 1) & (y.abs() <= 1)
        grid = torch.stack([x, y], dim=-1).nan_to_num(0.0).clamp(-2, 2)[:, None]  # [V,1,P,2]
        sampled = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0]
        sees = covered & (sampled[:, 1] >= _VALID_TAPS)
        yield _Samples(
            log_distance=torch.where(sees, sampled[:, 0], 0.0),
            valid=sees,
            covered=covered,
            feather=((1 - x.abs()) * (1 - y.abs())).clamp_min(0.0),
            area=(1 - chunk[:, 2].square()).clamp_min(0.0).sqrt(),
        )
