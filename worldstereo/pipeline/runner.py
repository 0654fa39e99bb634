"""The one stage sequence of a scene — init → each planned trajectory → splat → export — for every executor.

``worldstereo run-scene``, ``worldstereo eval`` and the cluster's stage tasks all go through
:func:`run_stage`; :func:`run_scene` runs the whole sequence in this process. A stage whose record and
outputs exist is skipped, so any executor resumes a scene where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from worldstereo.inputs import SceneInput
from worldstereo.pipeline.clips import ClipFn
from worldstereo.pipeline.exports import run_export
from worldstereo.pipeline.scene import (
    EXPORT,
    INIT,
    SPLAT,
    TRAJECTORY,
    DepthFn,
    GenerateFn,
    ReconstructFn,
    SceneContext,
    run_init,
    run_trajectory,
)
from worldstereo.pipeline.splat_stage import run_splat


@dataclass(frozen=True)
class Stage:
    """One step of a scene: ``init``, ``trajectory`` (with its record name), ``splat`` or ``export``."""

    kind: str
    trajectory: str | None = None

    @property
    def label(self) -> str:
        return self.trajectory or self.kind


@dataclass(frozen=True)
class Models:
    """The three model calls a scene makes, wherever the models run, and the generator's clip length
    (``clip_frames``; ``None``: ``generation.clip_frames``)."""

    estimate: DepthFn
    generate: GenerateFn
    reconstruct: ReconstructFn
    clip: ClipFn | None = None


@dataclass(frozen=True)
class StageEvent:
    """Progress of a scene: ``status`` is ``skipped`` (already done) or ``done``."""

    stage: str
    trajectory: str | None
    status: str
    index: int
    total: int


def following(stage: Stage, names: list[str]) -> Stage | None:
    """The stage after ``stage``, given the trajectory ``names`` planned when it finished (None after the export).

    Trajectories may be chosen one at a time: after init and after every trajectory the plan is read again."""
    if stage.kind == EXPORT:
        return None
    if stage.kind == SPLAT:
        return Stage(EXPORT)
    index = 0 if stage.kind == INIT else names.index(stage.trajectory) + 1
    return Stage(TRAJECTORY, names[index]) if index < len(names) else Stage(SPLAT)


def planned_after(ctx: SceneContext, stage: Stage) -> list[str]:
    """The trajectory names planned when ``stage`` (init or a trajectory) finished, from its snapshot."""
    return ctx.states.plan_names(stage.label)


def run_stage(ctx: SceneContext, stage: Stage, models: Models, read_scene: Callable[[], SceneInput],
              names: list[str] | None = None) -> bool:
    """Run ``stage`` unless it is done; True if it ran. ``read_scene`` is called by init only."""
    if ctx.is_done(stage.kind, stage.trajectory):
        return False
    if stage.kind == INIT:
        run_init(ctx, read_scene(), models.estimate)
    elif stage.kind == TRAJECTORY:
        run_trajectory(ctx, stage.trajectory, models.generate, models.reconstruct, names, models.clip)
    elif stage.kind == SPLAT:
        run_splat(ctx, names if names is not None else trajectory_names(ctx))
    elif stage.kind == EXPORT:
        run_export(ctx, names if names is not None else trajectory_names(ctx), models.reconstruct)
    else:
        raise ValueError(f"unknown stage {stage.kind!r}")
    return True


def run_scene(ctx: SceneContext, scene: SceneInput, depth_fn: DepthFn, generate_fn: GenerateFn,
              reconstruct_fn: ReconstructFn, clip_fn: ClipFn | None = None) -> Iterator[StageEvent]:
    """Run (or resume) every stage of one scene in this process, yielding progress after each."""
    models = Models(depth_fn, generate_fn, reconstruct_fn, clip_fn)
    stage: Stage | None = Stage(INIT)
    names: list[str] | None = None
    index = 0
    while stage is not None:
        ran = run_stage(ctx, stage, models, lambda: scene, names)
        if stage.kind in (INIT, TRAJECTORY):
            names = planned_after(ctx, stage)
        index += 1
        total = len(names or []) + 3  # as planned so far
        yield StageEvent(stage.kind, stage.trajectory, "done" if ran else "skipped", index, total)
        stage = following(stage, names or [])
