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


def plucker_rays(camera: Camera, normalize: bool = True, chunk_frames: int = 8) -> Tensor:
    """Per-pixel Plücker coordinates ``[N,6,H,W]``: unit world direction ``d`` and moment ``o x d``.

    With ``normalize`` the poses first go through :func:`normalize_cameras` (the trajectory is one
    batch). The moment is the same for every point ``o + t d`` of a ray. Both are linear in the pixel
    ``x̂ = (u, v, 1)``: ``d ∝ R K⁻¹ x̂`` and ``o x d ∝ [o]x R K⁻¹ x̂``, so one ``[6,3]`` map per camera
    (built in float64) times the pixel grid, then a division by ``|R K⁻¹ x̂|``, gives the rays in the
    camera dtype, ``chunk_frames`` cameras at a time.
    """
    if normalize:
        camera = Camera(camera.K, normalize_cameras(camera.c2w), camera.height, camera.width)
    c2w, K = camera.c2w.to(torch.float64), camera.K.to(torch.float64)
    directions = c2w[:, :3, :3] @ torch.linalg.inv(K)  # x̂ -> R K⁻¹ x̂ (Eq. 1 without depth)
    moments = torch.linalg.cross(c2w[:, :3, 3:].expand_as(directions), directions, dim=1)  # x̂ -> o x R K⁻¹ x̂
    maps = torch.cat([directions, moments], dim=1).to(camera.dtype)  # [N,6,3]
    grid = camera.pixel_grid().reshape(-1, 3).T  # [3,H*W]
    rays = torch.empty((len(camera), 6, grid.shape[1]), dtype=camera.dtype, device=camera.device)
    for first in range(0, len(camera), chunk_frames):
        part = rays[first : first + chunk_frames]
        torch.mm(maps[first : first + chunk_frames].reshape(-1, 3), grid, out=part.view(-1, grid.shape[1]))
        scale = part[:, 0] * part[:, 0]
        scale.addcmul_(part[:, 1], part[:, 1]).addcmul_(part[:, 2], part[:, 2]).rsqrt_()
        part.mul_(scale[:, None])
    return rays.view(len(camera), 6, camera.height, camera.width)
