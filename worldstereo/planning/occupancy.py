"""A coarse occupancy grid of the 3D cache: voxels holding cache points (closed, so that no ray slips through a gap
of a sampled surface), free space carved by the memory bank's views (each low-resolution ray is free up to the first
occupied voxel), outside (above and below the cache's vertical range), the rest unknown.

A camera may stand where the grid is ``passable``: away from occupied voxels (grown by ``clearance_voxels``) and
within ``slack_ratio`` (x the median depth) of carved free space, so that no path leaves through a wall the cache has
not seen yet. What earlier views looked through is carved, so holes they already looked at stop counting as
unexplored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from worldstereo.config import ExploreSettings
from worldstereo.geometry.camera import Camera

FREE, OCCUPIED, UNKNOWN, OUTSIDE = 0, 1, 2, 3
BEYOND, HOLE = 4, 5  # what a ray meets past the grid's box; unknown beside the cache's surface (scoring)
_RAYS_PER_BLOCK = 1 << 15  # rays marched at once
_STEPS_PER_BLOCK = 8


@dataclass(frozen=True)
class Occupancy:
    """Voxel states ``[X,Y,Z]`` (``FREE``, ``OCCUPIED``, ``UNKNOWN``) of the box from ``origin`` with edge ``voxel``."""

    origin: Tensor  # [3]
    voxel: float
    state: Tensor  # [X,Y,Z] uint8
    passable: Tensor  # [X,Y,Z] bool
    near_surface: Tensor | None = None  # [X,Y,Z] bool: within ``surface_voxels`` of an occupied voxel

    @property
    def dims(self) -> Tensor:
        return torch.tensor(self.state.shape, device=self.state.device)

    @property
    def diagonal(self) -> float:
        return float(self.dims.float().norm()) * self.voxel

    def cells(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Flat voxel ids ``[...]`` of world points ``[...,3]`` and whether they fall inside the grid."""
        ijk = torch.floor((points - self.origin) / self.voxel).long()
        dims = self.dims
        inside = ((ijk >= 0) & (ijk < dims)).all(-1)
        ijk = torch.minimum(ijk.clamp(min=0), dims - 1)
        return (ijk[..., 0] * dims[1] + ijk[..., 1]) * dims[2] + ijk[..., 2], inside

    def centres(self, ids: Tensor) -> Tensor:
        """World centres ``[M,3]`` of flat voxel ids."""
        _, ny, nz = self.state.shape
        ijk = torch.stack([ids // (ny * nz), ids // nz % ny, ids % nz], -1)
        return self.origin + (ijk.to(self.origin) + 0.5) * self.voxel

    def collides(self, eyes: Tensor) -> bool:
        """Whether a camera path through the positions ``[N,3]`` (densely resampled) leaves the passable space;
        the voxel of the first position (the start camera) is not checked."""
        longest = float((eyes[1:] - eyes[:-1]).norm(dim=-1).amax()) if len(eyes) > 1 else 0.0
        step = torch.linspace(0, 1, max(2, math.ceil(2 * longest / self.voxel) + 1), dtype=eyes.dtype,
                              device=eyes.device)
        dense = (eyes[:-1, None] + step[None, :, None] * (eyes[1:] - eyes[:-1])[:, None]).reshape(-1, 3)
        dense = dense[(dense - eyes[0]).norm(dim=-1) > self.voxel]
        ids, inside = self.cells(dense.to(self.origin))
        return bool((~inside | ~self.passable.flatten()[ids]).any())


def build_occupancy(points: Tensor, views: list[Camera], anchors: Tensor, up: Tensor, median_depth: float,
                    settings: ExploreSettings) -> Occupancy:
    """The grid over the cache ``points [P,3]`` and camera positions ``anchors [A,3]`` (plus ``grid_margin``), its free
    space carved by the rays of ``views`` (batches of one image size each) at ``carve_width`` pixels across. Voxels
    above the highest or below the lowest cache point along the world's ``up`` are ``OUTSIDE`` (the sky over an open
    scene is no surface to find)."""
    every = torch.cat([points, anchors.to(points)])
    lo, hi = every.amin(0), every.amax(0)
    lo, hi = lo - settings.grid_margin * (hi - lo), hi + settings.grid_margin * (hi - lo)
    voxel = float((hi - lo).amax()) / settings.grid_size
    dims = torch.ceil((hi - lo) / voxel).long().clamp(min=1)
    empty = torch.zeros(*dims.tolist(), dtype=torch.uint8, device=points.device)
    grid = Occupancy(lo, voxel, empty, empty.bool())
    ids, inside = grid.cells(points)
    occupied = torch.zeros(empty.numel(), dtype=torch.bool, device=points.device)
    occupied[ids[inside]] = True
    occupied = ~_grow(~_grow(occupied.view(tuple(dims.tolist())), 1), 1).flatten()  # closed: no gaps to leak through
    carved = _carve(grid, occupied, views, settings.carve_width)
    state = torch.full_like(empty, UNKNOWN).flatten()
    state[carved] = FREE
    state[occupied] = OCCUPIED
    height = grid.centres(torch.arange(len(state), device=state.device)) @ up.to(lo)
    band = points @ up.to(points)
    state[(height > float(band.amax()) + voxel) | (height < float(band.amin()) - voxel)] = OUTSIDE
    shape = tuple(dims.tolist())
    blocked = _grow(occupied.view(shape), settings.clearance_voxels)
    reachable = _grow(carved.view(shape), round(settings.slack_ratio * median_depth / voxel))
    near = _grow(occupied.view(shape), settings.surface_voxels)
    return Occupancy(lo, voxel, state.view(shape), reachable & ~blocked & (state.view(shape) != OUTSIDE), near)


def view_rays(cameras: Camera, width: int) -> tuple[Tensor, Tensor, Tensor]:
    """Origins ``[N,R,3]``, unit directions ``[N,R,3]`` and solid angles ``[N,R]`` of ``cameras`` at ``width`` pixels
    across (height by aspect)."""
    height = max(1, round(width * cameras.height / cameras.width))
    small = cameras.resized(height, width)
    rays = small.ray_directions().reshape(len(small), -1, 3)
    norm = rays.norm(dim=-1)
    fx, fy = small.K[:, 0, 0], small.K[:, 1, 1]
    solid = 1.0 / (norm**3 * (fx * fy)[:, None])  # dΩ = cos³θ / (fx fy) per pixel, cos θ = 1 / |K⁻¹x̂|
    return small.centers[:, None].expand_as(rays), rays / norm[..., None], solid


def march(grid: Occupancy, origins: Tensor, directions: Tensor, reach: float, crossed: Tensor | None = None,
          through: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Rays ``[R,3]`` stepped one voxel at a time up to ``reach``: the flat id and state of the first voxel that is
    neither free nor of state ``through`` (state ``FREE`` if none), and the last voxel of state ``through`` crossed
    before it (-1 if none). ``crossed`` (flat bool over the grid) gets every voxel a ray crosses before it. Rays are
    dropped once they stop, ``_STEPS_PER_BLOCK`` steps at a time."""
    total = max(1, math.ceil(reach / grid.voxel))
    flat = grid.state.flatten()
    first_id = torch.zeros(len(origins), dtype=torch.long, device=origins.device)
    first_state = torch.full((len(origins),), FREE, dtype=flat.dtype, device=origins.device)
    last_through = torch.full((len(origins),), -1, dtype=torch.long, device=origins.device)
    active = torch.arange(len(origins), device=origins.device)
    for begin in range(0, total, _STEPS_PER_BLOCK):
        if len(active) == 0:
            break
        steps = (torch.arange(begin, min(total, begin + _STEPS_PER_BLOCK), device=origins.device,
                              dtype=origins.dtype) + 0.5) * grid.voxel
        ids, inside = grid.cells(origins[active, None] + steps[None, :, None] * directions[active, None])
        state = torch.where(inside, flat[ids], torch.full_like(ids, BEYOND).to(flat.dtype))
        passing = state == FREE if through is None else (state == FREE) | (state == through)
        hit = ~passing.all(1)
        k = (~passing).to(torch.uint8).argmax(1)
        before = torch.arange(len(steps), device=ids.device)[None] < torch.where(hit, k, len(steps))[:, None]
        if crossed is not None:
            crossed[ids[before & inside]] = True
        if through is not None:
            marked = before & (state == through)
            last = len(steps) - 1 - marked.flip(1).to(torch.uint8).argmax(1)
            seen = marked.any(1)
            last_through[active[seen]] = ids[seen].gather(1, last[seen, None])[:, 0]
        rows, k = active[hit], k[hit]
        first_id[rows] = ids[hit].gather(1, k[:, None])[:, 0]
        first_state[rows] = state[hit].gather(1, k[:, None])[:, 0]
        active = active[~hit]
    return first_id, first_state, last_through


def _carve(grid: Occupancy, occupied: Tensor, views: list[Camera], width: int) -> Tensor:
    """Voxels that some view's ray crosses before its first occupied voxel (flat bool)."""
    probe = Occupancy(grid.origin, grid.voxel, occupied.view(grid.state.shape).to(torch.uint8), grid.passable)
    carved = torch.zeros_like(occupied)
    for batch in views:
        batch = batch.to(grid.origin.device, grid.origin.dtype)
        origins, directions, _ = view_rays(batch, min(width, batch.width))
        origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
        for start in range(0, len(origins), _RAYS_PER_BLOCK):
            block = slice(start, start + _RAYS_PER_BLOCK)
            march(probe, origins[block], directions[block], grid.diagonal, crossed=carved)
        ids, inside = grid.cells(batch.centers)
        carved[ids[inside]] = True
    return carved


def _grow(mask: Tensor, voxels: int) -> Tensor:
    """``mask [X,Y,Z]`` dilated by a cube of ``voxels`` on every side."""
    if voxels == 0:
        return mask
    size = 2 * voxels + 1
    return F.max_pool3d(mask[None, None].float(), size, stride=1, padding=voxels)[0, 0] > 0
