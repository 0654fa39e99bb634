"""Ground truth for synthetic scenes: the surface the requested cameras actually see.

A fused cloud can only cover what its trajectories looked at, so the reference cloud is the union of
the ground-truth depth maps of every requested camera, back-projected (Eq. 1) and subsampled.
"""

from __future__ import annotations

import torch
from torch import Tensor

from worldstereo.geometry.camera import Camera


def visible_surface(cameras: list[Camera], depths: list[Tensor], max_points: int = 400_000, seed: int = 0) -> Tensor:
    """Points ``[P,3]`` of the surface seen by batches of ``cameras`` with true z-depth ``[N,H,W]`` (inf: empty)."""
    points = []
    for batch, depth in zip(cameras, depths, strict=True):
        hit = torch.isfinite(depth) & (depth > 0)
        points.append(batch.to(dtype=depth.dtype).backproject(torch.where(hit, depth, torch.zeros_like(depth)))[hit])
    cloud = torch.cat(points)
    if len(cloud) > max_points:
        generator = torch.Generator().manual_seed(seed)
        cloud = cloud[torch.randperm(len(cloud), generator=generator)[:max_points]]
    return cloud
