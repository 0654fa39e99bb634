"""Plücker ray embeddings of camera trajectories: 6 channels ``[d, o x d]`` per pixel."""

from __future__ import annotations

import torch
from torch import Tensor

from worldstereo.geometry.camera import Camera, rigid_inverse

CAMERA_SCALE = 2.0
"""Distance of the first camera from the trajectory centre after normalisation."""


def normalize_cameras(c2w: Tensor, camera_scale: float = CAMERA_SCALE) -> Tensor:
    """Express a trajectory ``c2w [N,4,4]`` in a canonical frame; rotations are kept, centres move.

    1. Change of world frame so the first camera is the identity: ``c2w_i <- c2w_0^-1 c2w_i``.
    2. Re-centre: subtract the mean camera centre. Cameras farther from the median centre than
       10x the 97th percentile of those distances (capped at 1e6) are left out of the mean.
    3. Scale every centre so the first camera lies at ``camera_scale`` from the origin. When the
       first camera sits at the mean itself, the farthest camera is put at ``camera_scale``
       instead; when all centres coincide they stay at the origin.
    """
    c2w = rigid_inverse(c2w[:1]) @ c2w
    centers = c2w[:, :3, 3]
    spread = (centers - centers.median(dim=0).values).norm(dim=-1)
    cutoff = (torch.quantile(spread, 0.97) * 10).clamp(max=1e6)
    centers = centers - centers[spread <= cutoff].mean(dim=0)
    distances = centers.norm(dim=-1)
    extent = distances.max()
    reference = distances[0] if distances[0] > 1e-6 * extent else extent
    scale = camera_scale / reference if reference > 0 else torch.ones_like(reference)
    out = c2w.clone()
    out[:, :3, 3] = centers * scale
    return out


def plucker_rays(camera: Camera, normalize: bool = True, chunk_frames: int = 4) -> Tensor:
    """Per-pixel Plücker coordinates ``[N,6,H,W]``: unit world direction ``d`` and moment ``o x d``.

    With ``normalize`` the poses first go through :func:`normalize_cameras` (the trajectory is one
    batch). The moment is the same for every point ``o + t d`` of a ray. Rays at the pixel centres
    ``(x + 0.5, y + 0.5)`` by :func:`plucker_grid` (``chunk_frames`` cameras at a time), in the camera dtype.
    """
    if normalize:
        camera = Camera(camera.K, normalize_cameras(camera.c2w), camera.height, camera.width)
    c2w, K = camera.c2w.to(torch.float64), camera.K.to(torch.float64)
    directions = c2w[:, :3, :3] @ torch.linalg.inv(K)  # x̂ -> R K⁻¹ x̂ (Eq. 1 without depth)
    cols = torch.arange(camera.width, device=camera.device, dtype=torch.float64) + 0.5
    rows = torch.arange(camera.height, device=camera.device, dtype=torch.float64) + 0.5
    out = torch.empty((len(camera), 6, camera.height, camera.width), dtype=camera.dtype, device=camera.device)
    plucker_grid(directions, c2w[:, :3, 3], cols, rows, out, chunk_frames)
    return out


def plucker_grid(directions: Tensor, centres: Tensor, cols: Tensor, rows: Tensor, out: Tensor,
                 chunk_frames: int = 4) -> bool:
    """``out [N,6,H,W]`` (any strides, any float dtype) ← ``[d; o x d]`` of the ray through pixel
    ``x̂ = (cols[w], rows[h], 1)`` of each camera, from ``directions [N,3,3]`` (x̂ -> R K⁻¹ x̂) and ``centres
    [N,3]`` (``o``), all float64.

    Both ``R K⁻¹ x̂`` and ``o x R K⁻¹ x̂`` are linear in ``x̂``: one ``[6,3]`` map per camera, split into a column
    term plus a row term (rows taken from the middle one, so neither term is much larger than their sum). Their
    sum is divided by ``|R K⁻¹ x̂|`` in float64, ``chunk_frames`` cameras at a time, and rounded once into ``out``:
    each value is the float64 one correctly rounded (to within float64's own error). Returns whether every ray is
    finite in ``out``'s dtype."""
    maps = torch.cat([directions, torch.linalg.cross(centres[:, :, None].expand_as(directions), directions, dim=1)],
                     dim=1)  # [N,6,3]: x̂ -> [R K⁻¹ x̂; o x R K⁻¹ x̂]
    middle = rows[len(rows) // 2]
    along_cols = (maps[:, :, :1] * cols + (maps[:, :, 2:] + maps[:, :, 1:2] * middle))[:, :, None, :]  # [N,6,1,W]
    along_rows = (maps[:, :, 1:2] * (rows - middle))[:, :, :, None]  # [N,6,H,1]
    frames = min(chunk_frames, len(maps))
    rays = torch.empty((frames, *out.shape[1:]), dtype=torch.float64, device=out.device)
    norms = torch.empty((frames, *out.shape[2:]), dtype=torch.float64, device=out.device)
    limits = []
    for first in range(0, len(maps), frames):
        last = min(first + frames, len(maps))
        part, norm = rays[: last - first], norms[: last - first]
        torch.add(along_cols[first:last], along_rows[first:last], out=part)
        torch.mul(part[:, 0], part[:, 0], out=norm).addcmul_(part[:, 1], part[:, 1]).addcmul_(part[:, 2], part[:, 2])
        part.mul_(norm.clamp_min_(1e-24).rsqrt_()[:, None])  # d / max(|d|, 1e-12), o x d likewise
        limits.append(torch.stack(torch.aminmax(part)))  # NaN or a magnitude past the dtype's range shows here
        out[first:last].copy_(part)  # the one rounding
    return bool((torch.stack(limits).abs() <= torch.finfo(out.dtype).max).all())
