"""Voxel-grid thinning of coloured point clouds, and merging new points into a bounded 3D cache."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from worldstereo.errors import InvalidInputError


def voxel_downsample(
    points: Tensor, colors: Tensor, voxel_size: float, *, keep: Literal["first", "mean"] = "first"
) -> tuple[Tensor, Tensor, Tensor]:
    """One point per occupied voxel of edge ``voxel_size``: ``(points, colors, kept_index)``.

    ``keep="first"`` keeps the lowest-index point of each voxel; ``"mean"`` averages positions and
    colours (integer colours are rounded) and ``kept_index`` names the lowest-index point of each
    voxel. Voxels come out in the order of their ``kept_index``, so the input order is preserved.
    """
    if points.ndim != 2 or points.shape[1] != 3:
        raise InvalidInputError(f"points must be [P,3], got {tuple(points.shape)}")
    if colors.ndim != 2 or colors.shape[0] != points.shape[0]:
        raise InvalidInputError(f"colors must be [P,C] with P={points.shape[0]}, got {tuple(colors.shape)}")
    if not bool(torch.isfinite(points).all()):
        raise InvalidInputError("points must be finite")
    if not voxel_size > 0:
        raise InvalidInputError(f"voxel_size must be positive, got {voxel_size}")
    if keep not in ("first", "mean"):
        raise InvalidInputError(f"keep must be 'first' or 'mean', got {keep!r}")
    if points.shape[0] == 0:
        return points, colors, torch.zeros(0, dtype=torch.int64, device=points.device)

    (voxel,) = _voxel_ids(points, voxel_size=voxel_size)
    occupied, inverse = torch.unique(voxel, return_inverse=True)
    count = occupied.numel()
    order = torch.arange(points.shape[0], device=points.device)
    first = torch.full((count,), points.shape[0], dtype=torch.int64, device=points.device)
    first.scatter_reduce_(0, inverse, order, "amin")
    rank = first.argsort()
    kept = first[rank]
    if keep == "first":
        return points[kept], colors[kept], kept

    position = inverse.new_empty(count)
    position[rank] = torch.arange(count, device=points.device)
    slot = position[inverse]
    return _scatter_mean(points, slot, count), _scatter_mean(colors, slot, count), kept


def merge_clouds(
    existing: tuple[Tensor, Tensor], new: tuple[Tensor, Tensor], voxel_size: float
) -> tuple[Tensor, Tensor]:
    """Union of two ``(points, colors)`` clouds thinned to one point per voxel, existing points first.

    ``existing`` holds one point per voxel (as :func:`voxel_downsample` leaves it). A voxel already
    held keeps its point, so merging the same cloud again adds nothing and the cache grows only with
    newly observed space.
    """
    kept = new_voxel_indices(existing[0], new[0], voxel_size)
    return (torch.cat([existing[0], new[0][kept].to(existing[0])]),
            torch.cat([existing[1], new[1][kept].to(existing[1])]))


def new_voxel_indices(existing: Tensor, new: Tensor, voxel_size: float) -> Tensor:
    """Ascending indices of the ``new [Q,3]`` points that open a voxel: the first of each voxel no ``existing`` point holds.

    With ``existing`` thinned to one point per voxel, ``cat([existing, new[kept]])`` equals
    :func:`voxel_downsample` (keep first) of ``cat([existing, new])``: both id lists are sorted
    apart and only the new voxels (not the new points) are looked up among the existing ones.
    """
    for name, cloud in (("existing", existing), ("new", new)):
        if cloud.ndim != 2 or cloud.shape[1] != 3:
            raise InvalidInputError(f"{name} points must be [P,3], got {tuple(cloud.shape)}")
        if not bool(torch.isfinite(cloud).all()):
            raise InvalidInputError(f"{name} points must be finite")
    if not voxel_size > 0:
        raise InvalidInputError(f"voxel_size must be positive, got {voxel_size}")
    return new_voxel_indices_unchecked(existing, new, voxel_size)


def new_voxel_indices_unchecked(existing: Tensor, new: Tensor, voxel_size: float) -> Tensor:
    """:func:`new_voxel_indices` for callers that hold finite ``[P,3]`` clouds and a positive voxel size."""
    if len(new) == 0:
        return torch.zeros(0, dtype=torch.int64, device=new.device)
    if len(existing) == 0:
        return voxel_downsample(new, new, voxel_size)[2]
    occupied, ids = _voxel_ids(existing, new, voxel_size=voxel_size)
    occupied = occupied.sort().values
    ids, order = ids.sort(stable=True)  # each voxel's run starts at its first point
    starts = torch.ones(len(ids), dtype=torch.bool, device=ids.device)
    torch.ne(ids[1:], ids[:-1], out=starts[1:])
    voxels, first = ids[starts], order[starts]
    held = occupied[torch.searchsorted(occupied, voxels).clamp_max_(len(occupied) - 1)] == voxels
    return first[~held].sort().values


def _cells(points: Tensor, voxel_size: float) -> Tensor:
    """Voxel coordinates ``[P,3]`` of every point: integers held in float64 (exact at any magnitude, since floats
    beyond 2^53 are integers themselves)."""
    return points.to(torch.float64, copy=True).div_(voxel_size).floor_()


def _voxel_ids(*clouds: Tensor, voxel_size: float) -> list[Tensor]:
    """One int64 id per point of each cloud naming its voxel; equal ids across ``clouds`` mean the same voxel.

    Ids are row-major over the occupied box when its cell count fits int64 (every ordinary scene), else the
    lexicographic rank of the cells (dense ranks of each column, combined two at a time: each product stays
    below the point count squared), which is exact for any finite points.
    """
    cells = [_cells(cloud, voxel_size) for cloud in clouds]
    low = torch.stack([c.min(dim=0).values for c in cells]).min(dim=0).values
    high = torch.stack([c.max(dim=0).values for c in cells]).max(dim=0).values
    span = torch.cat([(high - low + 1).prod()[None], low.abs(), high.abs()])
    if not bool(torch.isfinite(span).all()):
        raise InvalidInputError(f"a point lies beyond float64's range at voxel size {voxel_size}")
    if float(span.max()) < 2**62:  # the box's cell count, and every cell, fit int64
        low, extent = low.to(torch.int64), (high - low + 1).to(torch.int64)
        return [_pack(c.to(torch.int64).sub_(low), extent) for c in cells]
    ids = _lexicographic_rank(torch.cat(cells))
    return list(ids.split([len(c) for c in cells]))


def _pack(cells: Tensor, extent: Tensor) -> Tensor:
    """Row-major id of non-negative cells ``[P,3]`` in a box of ``extent`` cells."""
    return (cells[:, 0] * extent[1]).add_(cells[:, 1]).mul_(extent[2]).add_(cells[:, 2])


def _lexicographic_rank(cells: Tensor) -> Tensor:
    """Dense rank ``[P]`` of the rows of ``cells [P,3]`` in lexicographic order."""
    rank = torch.unique(cells[:, 0], return_inverse=True)[1]
    for column in (1, 2):
        values, inverse = torch.unique(cells[:, column], return_inverse=True)
        rank = torch.unique(rank * len(values) + inverse, return_inverse=True)[1]
    return rank


def _scatter_mean(values: Tensor, slot: Tensor, count: int) -> Tensor:
    """Mean of ``values [P,C]`` per slot ``[P]`` into ``[count,C]`` (accumulated in float64)."""
    total = torch.zeros((count, values.shape[1]), dtype=torch.float64, device=values.device)
    total.index_add_(0, slot, values.to(torch.float64))
    size = torch.bincount(slot, minlength=count).to(torch.float64)
    mean = total / size[:, None]
    return mean.to(values.dtype) if values.dtype.is_floating_point else mean.round().to(values.dtype)
