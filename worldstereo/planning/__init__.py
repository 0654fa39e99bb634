"""Trajectory planners behind one interface: ``presets`` (the preset set) and ``explore`` (chosen on the live cache)."""

from worldstereo.planning.base import Choice, Origin, Planned, Planner, PlanInput, Scored
from worldstereo.planning.explore import ExplorePlanner
from worldstereo.planning.presets import PresetPlanner


def make_planner(name: str) -> Planner:
    """The planner named by ``trajectory.planner``."""
    return ExplorePlanner() if name == "explore" else PresetPlanner()


__all__ = ["Choice", "ExplorePlanner", "Origin", "PlanInput", "Planned", "Planner", "PresetPlanner", "Scored",
           "make_planner"]
