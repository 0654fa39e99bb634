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


def plucker_rays(camera: Camera, normalize: bool = True) -> Tensor:
    """Per-pixel Plücker coordinates ``[N,6,H,W]``: unit world direction ``d`` and moment ``o x d``.

    With ``normalize`` the poses first go through :func:`normalize_cameras` (the trajectory is one
    batch). The moment is the same for every point ``o + t d`` of a ray.
    """
    if normalize:
        camera = Camera(camera.K, normalize_cameras(camera.c2w), camera.height, camera.width)
    directions = torch.nn.functional.normalize(camera.ray_directions(), dim=-1)
    origins = camera.centers[:, None, None, :].expand_as(directions)
    moments = torch.linalg.cross(origins, directions, dim=-1)
    return torch.cat([directions, moments], dim=-1).permute(0, 3, 1, 2).contiguous()
