"""The ``presets`` planner: the preset set from every given start in order (as planned on the initial cache), then
its shapes again from the last path's end camera, one at a time, up to ``max_trajectories``."""

from __future__ import annotations

import torch

from worldstereo.config import TrajectorySettings
from worldstereo.geometry.trajectory import Trajectory, plan_trajectories, preset_order
from worldstereo.planning.base import Choice, Origin, PlanInput, budget


def median_depth(depth: torch.Tensor) -> float:
    return float(depth[torch.isfinite(depth) & (depth > 0)].median())


class PresetPlanner:
    ahead = True

    def __init__(self) -> None:
        self._sets: dict[int, list[Trajectory]] = {}  # planned sets by start, while one plan point asks

    def next(self, plan: PlanInput, settings: TrajectorySettings) -> Choice | None:
        shapes = preset_order(settings)
        k = len(plan.history)
        if k >= budget(plan, settings, len(shapes)):
            return None
        if k < len(shapes) * len(plan.starts):
            index, shape = divmod(k, len(shapes))
            origin = plan.starts[index]
            if index not in self._sets:
                self._sets[index] = plan_trajectories(origin.camera, median_depth(origin.depth), settings,
                                                      depth=origin.depth, cache_points=plan.points)
            name = f"{origin.label}_{shapes[shape]}" if origin.label else shapes[shape]
            return Choice(name, origin, self._sets[index][shape], label=shapes[shape])
        if len(plan.ends) < k:  # the last path has not run yet: its end camera is unknown
            return None
        origin, shape = plan.ends[-1], shapes[k % len(shapes)]
        trajectory = plan_trajectories(origin.camera, plan.median_depth, settings, depth=origin.depth,
                                       cache_points=plan.points)[k % len(shapes)]
        return Choice(f"{shape}_{k + 1}", origin, trajectory, label=shape)
