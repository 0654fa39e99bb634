"""Ground truth for synthetic scenes: the surface the requested cameras actually see, and (coverage) all the surface
that the scene's free space reaches.

A fused cloud can only cover what its trajectories looked at, so the reference cloud of F1 is the union of the
ground-truth depth maps of every requested camera, back-projected (Eq. 1) and subsampled. Coverage scores how much
of the reachable surface a plan's trajectories saw.
"""

from __future__ import annotations

import torch
from torch import Tensor

from worldstereo.geometry.camera import Camera
from worldstereo.synthetic.scenes import SyntheticScene


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


def reachable_surface(scene: SyntheticScene, n: int = 200_000, seed: int = 0) -> Tensor:
    """``n`` points ``[n,3]`` uniform by area on the surface that the scene's free space reaches: every surface not
    hidden by another primitive inside ``scene.free_space`` (the room's inside faces, every face of the objects, the
    panorama room's walls), whatever the cameras saw."""
    lo, hi = (torch.tensor(corner, dtype=torch.float64) for corner in scene.free_space)
    slack = 1e-6 * scene.extent
    kept, found, batch = [], 0, 0
    while found < n:
        points = scene.surface_points(2 * n, seed=seed + batch)[0]
        points = points[((points >= lo - slack) & (points <= hi + slack)).all(-1)]
        kept.append(points)
        found, batch = found + len(points), batch + 1
    return torch.cat(kept)[:n]
