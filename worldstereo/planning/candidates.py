"""Candidate paths of the ``explore`` planner: the preset shapes, turns in place, orbits about hole clusters and paths
aimed at them, each from a given start or an earlier path's end camera, shrunk until it stays in the passable space."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from worldstereo.config import TrajectorySettings
from worldstereo.geometry.camera import Camera, look_at
from worldstereo.geometry.trajectory import (
    Trajectory,
    preset_order,
    preset_trajectory,
    rotation_about_axis,
    shrunk_fraction,
    waypoint_trajectory,
    world_vertical,
)
from worldstereo.planning.base import Origin
from worldstereo.planning.occupancy import FREE, UNKNOWN, Occupancy


@dataclass(frozen=True)
class Candidate:
    label: str  # "{shape}@{origin}"
    shape: str
    origin: Origin
    trajectory: Trajectory


@dataclass(frozen=True)
class Target:
    """A cluster of hole voxels: its centre and the unit direction from it into carved free space."""

    centre: Tensor
    towards_free: Tensor
    size: int


def hole_targets(grid: Occupancy, count: int, cell: int) -> list[Target]:
    """The ``count`` largest clusters (cells of ``cell`` voxels) of frontier voxels: unknown voxels beside carved
    free space and near the cache's surface, largest first (ties: lower cell id)."""
    state = grid.state
    if count == 0:
        return []
    pad = torch.nn.functional.pad(state[None, None].float(), (1, 1, 1, 1, 1, 1), value=float(UNKNOWN))[0, 0]
    offsets = [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]
    X, Y, Z = state.shape
    towards = torch.zeros(*state.shape, 3, dtype=grid.origin.dtype, device=state.device)
    for dx, dy, dz in offsets:
        neighbour = pad[1 + dx:1 + dx + X, 1 + dy:1 + dy + Y, 1 + dz:1 + dz + Z] == FREE
        towards += neighbour[..., None] * torch.tensor((dx, dy, dz), dtype=towards.dtype, device=state.device)
    frontier = (state == UNKNOWN) & (towards.abs().sum(-1) > 0) & grid.near_surface
    ids = frontier.flatten().nonzero().squeeze(1)
    if len(ids) == 0:
        return []
    ijk = torch.stack([ids // (Y * Z), ids // Z % Y, ids % Z], -1) // cell
    cells = (ijk[:, 0] * (Y // cell + 1) + ijk[:, 1]) * (Z // cell + 1) + ijk[:, 2]
    unique, inverse, sizes = torch.unique(cells, return_inverse=True, return_counts=True)
    order = torch.sort(sizes, descending=True, stable=True).indices[:count]
    centres = grid.centres(ids)
    directions = towards.reshape(-1, 3)[ids]
    targets = []
    for slot in order.tolist():
        members = inverse == slot
        free = torch.nn.functional.normalize(directions[members].sum(0), dim=0)
        if free.norm() > 0:
            targets.append(Target(centres[members].mean(0), free, int(sizes[slot])))
    return targets


def candidates(origins: list[Origin], targets: list[Target], grid: Occupancy, d: float,
               settings: TrajectorySettings) -> list[Candidate]:
    """Every candidate from every origin that stays in the passable space (shrunk as far as ``min_fraction``)."""
    found = []
    for origin in origins:
        camera = origin.camera.to(grid.origin.device, grid.origin.dtype)
        for shape in preset_order(settings):
            trajectory = preset_trajectory(shape, camera, d, settings, grid.collides)
            found.append(Candidate(f"{shape}@{origin.label or 'input'}", shape, origin, trajectory))
        for sign, shape in ((1.0, "turn+"), (-1.0, "turn-")):
            found.append(Candidate(f"{shape}@{origin.label or 'input'}", shape, origin,
                                   _turn(camera, sign * settings.explore.turn_deg, settings.num_frames)))
        for index, target in enumerate(targets):
            for shape, path in _target_paths(camera, target, d, settings):
                fraction = shrunk_fraction(lambda f: path(f).cameras.c2w, grid.collides, settings)
                found.append(Candidate(f"{shape}{index}@{origin.label or 'input'}", shape, origin, path(fraction)))
    return [c for c in found if torch.isfinite(c.trajectory.cameras.c2w).all()
            and not grid.collides(c.trajectory.cameras.centers)]


def _turn(camera: Camera, degrees: float, frames: int) -> Trajectory:
    """The camera turned in place by ``degrees`` about the world's vertical."""
    start = camera.c2w[0]
    angles = torch.deg2rad(degrees * torch.tensor([1 / 3, 2 / 3, 1.0], dtype=start.dtype, device=start.device))
    waypoints = start.expand(3, 4, 4).clone()
    waypoints[:, :3, :3] = rotation_about_axis(world_vertical(start), angles) @ start[:3, :3]
    return waypoint_trajectory("turn", camera, waypoints, frames)


def _target_paths(camera: Camera, target: Target, d: float, settings: TrajectorySettings):
    """``aim``: move towards the viewpoint ``aim_distance * d`` from the target on its free side, turning to face it;
    ``orbit+`` / ``orbit-``: circle about the vertical through the target by ``orbit_deg``, facing it."""
    start = camera.c2w[0]
    up = world_vertical(start)
    eye, centre = start[:3, 3], target.centre.to(start)
    viewpoint = centre + settings.explore.aim_distance * d * target.towards_free.to(start)
    n = settings.num_frames

    def aim(fraction: float) -> Trajectory:
        goal = eye + fraction * (viewpoint - eye)
        return waypoint_trajectory("aim", camera, look_at(goal, centre, up)[None], n)

    paths = [("aim", aim)]
    offset = eye - centre
    if (offset - (offset @ up) * up).norm() > 0.1 * d:
        for sign, shape in ((1.0, "orbit+"), (-1.0, "orbit-")):
            def orbit(fraction: float, sign: float = sign) -> Trajectory:
                angles = torch.deg2rad(sign * fraction * settings.explore.orbit_deg * torch.tensor([1 / 3, 2 / 3, 1.0]))
                eyes = centre + rotation_about_axis(up, angles.to(up)) @ offset
                return waypoint_trajectory("orbit", camera, look_at(eyes, centre, up), n)

            paths.append((shape, orbit))
    return paths

