"""The scene's plan grown by its planner: after init and after every trajectory's cache update the configured
planner is asked for the next trajectory; each choice (score, runners-up) is kept in the scene's state, and a path
that starts at an earlier path's end camera gets that camera's last memory-bank frame as its start."""

from __future__ import annotations

from dataclasses import replace

import torch

from worldstereo.config import Settings
from worldstereo.geometry.camera import Camera
from worldstereo.memory.bank import MemoryFrame
from worldstereo.pipeline.state import SceneState, Start
from worldstereo.planning import Choice, Origin, Planned, PlanInput, make_planner
from worldstereo.planning.presets import median_depth
from worldstereo.png import decode_png


def extend_plan(settings: Settings, state: SceneState) -> list[Choice]:
    """Add the planner's next trajectories to ``state.plans`` (all it gives now if it plans ahead, else one)."""
    planner = make_planner(settings.trajectory.planner)
    made = []
    while (choice := planner.next(plan_input(state), settings.trajectory)) is not None:
        start = choice.origin.start if choice.origin.start is not None else _new_start(settings, state, choice.origin)
        cameras = choice.trajectory.cameras.to("cpu", torch.float64)
        state.plans.append((choice.name, start, replace(choice.trajectory, name=choice.name, cameras=cameras)))
        state.choices.append(choice.record())
        made.append(choice)
        if not planner.ahead:
            break
    return made


def plan_input(state: SceneState) -> PlanInput:
    """What the planner sees of ``state``."""
    ran = {frame.source for frame in state.bank.frames}
    planned = {name for name, _, _ in state.plans}
    origins = [Origin(s.name, s.camera, s.depth, i) for i, s in enumerate(state.starts)]
    by_name = {o.label: o for o in origins if o.label in planned}  # end cameras that became starts
    ends = [by_name.get(name) or Origin(name, _last_frame(state, name).camera, None, None)
            for name, _, _ in state.plans if name in ran]
    groups: dict[tuple[int, int], list[Camera]] = {}
    for frame in state.bank.frames:
        groups.setdefault((frame.camera.height, frame.camera.width), []).append(frame.camera)
    history = [Planned(name, trajectory, name in ran) for name, _, trajectory in state.plans]
    return PlanInput(state.cache.points, [o for o in origins if o.label not in planned], ends, [Camera.cat(g) for g in groups.values()], history,
                     median_depth(state.starts[0].depth))


def _last_frame(state: SceneState, name: str) -> MemoryFrame:
    return max((f for f in state.bank.frames if f.source == name), key=lambda f: f.index)


def _new_start(settings: Settings, state: SceneState, origin: Origin) -> int:
    """Make a run path's last bank frame a start: its 8-bit image and the cache's depth seen from it."""
    frame = _last_frame(state, origin.label)
    camera = frame.camera.to("cpu", torch.float64)
    image = decode_png(frame.png).float() / 255
    depth = state.cache.render(frame.camera.to(state.cache.points.device, torch.float32),
                               radius=settings.memory.splat_radius).depth[0].to("cpu", torch.float64)
    state.starts.append(Start(origin.label, image, camera, depth))
    return len(state.starts) - 1
