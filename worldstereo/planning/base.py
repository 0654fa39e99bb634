"""The planner interface: what a planner sees of a scene (cache, starts, history) and what it decides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from torch import Tensor

from worldstereo.config import TrajectorySettings
from worldstereo.geometry.camera import Camera
from worldstereo.geometry.trajectory import Trajectory


@dataclass(frozen=True)
class Origin:
    """A pose a path may start from: a given start (``start`` its index) or the last memory-bank frame of a path that
    ran (``start`` None until the scene makes it a start)."""

    label: str  # the start's name ("" for a perspective input, "v0".. for panorama views) or the path's name
    camera: Camera  # one camera
    depth: Tensor | None  # z-depth [H,W] seen from it, where known
    start: int | None


@dataclass(frozen=True)
class Planned:
    """A trajectory of the scene's plan so far, and whether it ran."""

    name: str
    trajectory: Trajectory
    ran: bool


@dataclass(frozen=True)
class PlanInput:
    """What a planner sees: the cache, where paths may start, the memory bank's cameras, the plan so far."""

    points: Tensor  # [P,3] cache points
    starts: list[Origin]  # the given starts, in order
    ends: list[Origin]  # the last bank frame of every path that ran, in run order
    views: list[Camera]  # memory-bank cameras, batches of one image size each
    history: list[Planned]
    median_depth: float  # of the first start


@dataclass(frozen=True)
class Scored:
    """A candidate path and its score (steradians of new surface)."""

    label: str
    score: float


@dataclass(frozen=True)
class Choice:
    """The next trajectory: its record name, where it starts, its score and the candidates it beat."""

    name: str
    origin: Origin
    trajectory: Trajectory
    score: float | None = None
    label: str = ""
    runners_up: tuple[Scored, ...] = field(default_factory=tuple)

    def record(self) -> dict:
        """The JSON form kept in the scene's state."""
        return {"name": self.name, "origin": self.origin.label, "label": self.label, "score": self.score,
                "runners_up": [{"label": s.label, "score": s.score} for s in self.runners_up]}


class Planner(Protocol):
    """``next(plan, settings)``: the next trajectory, or None when there is none to add now. A planner that plans
    ``ahead`` is asked again at once (its choices do not depend on what trajectories add to the cache); any other
    is asked after every trajectory."""

    ahead: bool

    def next(self, plan: PlanInput, settings: TrajectorySettings) -> Choice | None: ...


def budget(plan: PlanInput, settings: TrajectorySettings, shapes: int) -> int:
    """How many trajectories a scene runs: ``max_trajectories``, else the preset set once from every start."""
    return settings.max_trajectories or shapes * len(plan.starts)
