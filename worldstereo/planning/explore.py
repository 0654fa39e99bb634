"""The ``explore`` planner: after every cache update, the candidate that would reveal the most new surface.

A candidate's score is the new surface its views would see: at ``score_frames`` of its poses (frame 0 excluded),
rays at ``score_width`` pixels across are marched through the occupancy grid, through free space and through unknown
space that is far from the cache's surface. A ray that meets an unknown voxel near the surface (a hole of the cache
beside what it holds, in space no earlier view looked through) counts its solid angle there; a ray that crossed
unknown space and leaves it without meeting the cache counts where it last was in unknown space: in full where it
passes the lowest or highest surface (a floor or ceiling goes on), ``open_weight`` of it where it leaves the grid or
its reach. A ray that meets the cache's surface counts nothing. Each voxel counts once per candidate (the largest
solid angle of a ray counted there). Score in steradians.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from worldstereo.config import TrajectorySettings
from worldstereo.geometry.camera import Camera
from worldstereo.geometry.trajectory import keyframe_indices, preset_order, world_vertical
from worldstereo.planning.base import Choice, PlanInput, Scored, budget
from worldstereo.planning.candidates import Candidate, candidates, hole_targets
from worldstereo.planning.occupancy import (
    BEYOND,
    FREE,
    HOLE,
    OCCUPIED,
    UNKNOWN,
    Occupancy,
    build_occupancy,
    march,
    view_rays,
)

_RAYS_PER_BLOCK = 1 << 14


def explore_grid(plan: PlanInput, settings: TrajectorySettings) -> Occupancy:
    """The occupancy grid of the plan's cache, carved by its memory-bank views."""
    anchors = torch.cat([o.camera.centers for o in plan.starts + plan.ends]).to(plan.points)
    up = world_vertical(plan.starts[0].camera.c2w[0])
    return build_occupancy(plan.points, plan.views, anchors, up, plan.median_depth, settings.explore)


def scored_candidates(plan: PlanInput, settings: TrajectorySettings) -> list[tuple[Candidate, float]]:
    """Every candidate that stays in free space with its score, in candidate order."""
    explore = settings.explore
    grid = explore_grid(plan, settings)
    origins = plan.starts + (plan.ends[-explore.start_poses:] if explore.start_poses else [])
    targets = hole_targets(grid, explore.targets, explore.cluster_voxels)
    found = candidates(origins, targets, grid, plan.median_depth, settings)
    if not found:
        return []
    scores = new_surface(grid, [c.trajectory.cameras for c in found], explore.score_frames, explore.score_width,
                         explore.range_ratio * plan.median_depth, explore.open_weight)
    return list(zip(found, scores.tolist()))


def new_surface(grid: Occupancy, paths: list[Camera], frames: int, width: int, reach: float,
                open_weight: float) -> Tensor:
    """Steradians of new surface ``[C]`` that each path's views would see (each voxel once per path)."""
    picks = [path[keyframe_indices(len(path), min(frames + 1, len(path)))[1:]] for path in paths]
    origins, directions, solid, owner = [], [], [], []
    for index, views in enumerate(picks):
        o, d, w = view_rays(views.to(grid.origin.device, grid.origin.dtype), width)
        origins.append(o.reshape(-1, 3)), directions.append(d.reshape(-1, 3)), solid.append(w.reshape(-1))
        owner.append(torch.full((w.numel(),), index, device=grid.origin.device))
    origins, directions, solid, owner = (torch.cat(x) for x in (origins, directions, solid, owner))
    keys, weights = [], []
    cells = grid.state.numel()
    hole = (grid.state == UNKNOWN) & grid.near_surface
    scoring = replace(grid, state=torch.where(hole, torch.full_like(grid.state, HOLE), grid.state))
    for start in range(0, len(origins), _RAYS_PER_BLOCK):
        block = slice(start, start + _RAYS_PER_BLOCK)
        voxel, state, last = march(scoring, origins[block], directions[block], reach, through=UNKNOWN)
        found = (state == HOLE) | ((state != OCCUPIED) & (last >= 0))
        far = (state == BEYOND) | (state == FREE)  # left the grid or ran out of reach
        keys.append(owner[block][found] * cells + torch.where(state == HOLE, voxel, last)[found])
        weights.append((solid[block] * torch.where(far, open_weight, 1.0))[found])
    keys, weights = torch.cat(keys), torch.cat(weights)
    unique, inverse = torch.unique(keys, return_inverse=True)
    best = torch.zeros(len(unique), dtype=weights.dtype, device=weights.device).scatter_reduce_(
        0, inverse, weights, "amax", include_self=False)
    return torch.zeros(len(paths), dtype=weights.dtype, device=weights.device).index_add_(0, unique // cells, best)


class ExplorePlanner:
    ahead = False

    def next(self, plan: PlanInput, settings: TrajectorySettings) -> Choice | None:
        k = len(plan.history)
        if k >= budget(plan, settings, len(preset_order(settings))) or not all(p.ran for p in plan.history):
            return None
        scored = scored_candidates(plan, settings)
        if not scored:
            return None
        order = sorted(range(len(scored)), key=lambda i: -scored[i][1])  # stable: ties keep candidate order
        best, score = scored[order[0]]
        if score < settings.min_gain and k > 0:  # a scene runs at least one path, as with the presets
            return None
        runners = tuple(Scored(scored[i][0].label, scored[i][1]) for i in order[1:1 + settings.explore.runners_up])
        shape = best.shape.rstrip("+-")
        return Choice(f"x{k + 1}_{shape}", best.origin, best.trajectory, score, best.label, runners)
