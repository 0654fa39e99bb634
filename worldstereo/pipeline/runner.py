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
    trajectory_names,
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


def later_stages(names: list[str]) -> list[Stage]:
    """The stages after init, in run order, for the planned trajectory ``names``."""
    return [Stage(TRAJECTORY, name) for name in names] + [Stage(SPLAT), Stage(EXPORT)]


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
    ran = run_stage(ctx, Stage(INIT), models, lambda: scene)
    names = trajectory_names(ctx)
    stages = later_stages(names)
    total = len(stages) + 1
    yield StageEvent(INIT, None, "done" if ran else "skipped", 1, total)
    for index, stage in enumerate(stages, start=2):
        ran = run_stage(ctx, stage, models, lambda: scene, names)
        yield StageEvent(stage.kind, stage.trajectory, "done" if ran else "skipped", index, total)
