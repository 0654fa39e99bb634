"""Analytic primitives for exact ray casting: axis-aligned boxes, spheres and vertical cylinders.

Each family holds a batch of ``n`` primitives as tensors; every operation is vectorised over rays or
points x primitives. A box is solid (seen from outside), hollow (a room, seen from inside), or flat
(zero extent along one axis: a two-sided rectangle). Signed distances are negative inside the
occupied region: the solid for boxes, spheres and cylinders, everything outside a hollow box.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Protocol, Self

import torch
from torch import Tensor

T_MIN = 1e-6  # hits nearer than this along a ray (metres) are ignored


class Family(Protocol):
    def __len__(self) -> int: ...
    def intersect(self, origins: Tensor, directions: Tensor) -> Tensor: ...
    def signed_distance(self, points: Tensor) -> Tensor: ...
    def normals(self, points: Tensor, index: Tensor) -> Tensor: ...
    def areas(self) -> Tensor: ...
    def sample(self, index: Tensor, generator: torch.Generator) -> Tensor: ...
    def to(self, device: torch.device, dtype: torch.dtype) -> Self: ...


class _Tensors:
    """Device/dtype conversion for dataclasses of tensors (floating tensors take ``dtype``)."""

    def to(self, device: torch.device, dtype: torch.dtype) -> Self:
        def convert(t: Tensor) -> Tensor:
            return t.to(device, dtype) if t.is_floating_point() else t.to(device)

        return replace(self, **{f.name: convert(getattr(self, f.name)) for f in fields(self)})  # type: ignore[arg-type]

    def __len__(self) -> int:
        return getattr(self, fields(self)[0].name).shape[0]  # type: ignore[arg-type]


def _safe_reciprocal(d: Tensor) -> Tensor:
    """``1/d`` with exact zeros replaced by the smallest normal number, so slab tests never see ``0 * inf``."""
    tiny = torch.finfo(d.dtype).tiny
    return 1 / torch.where(d.abs() < tiny, torch.full_like(d, tiny), d)


def _uniform(shape: tuple[int, ...], like: Tensor, generator: torch.Generator) -> Tensor:
    return torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)


@dataclass(frozen=True, eq=False)
class Boxes(_Tensors):
    """Axis-aligned boxes ``[lo, hi]``; ``hollow`` ones are rooms seen from inside."""

    lo: Tensor  # [n,3]
    hi: Tensor  # [n,3]
    hollow: Tensor  # [n] bool

    def intersect(self, origins: Tensor, directions: Tensor) -> Tensor:
        """Ray parameter of the visible hit ``[R,n]`` (slab test), ``inf`` for a miss."""
        inv = _safe_reciprocal(directions)[:, None, :]
        t_lo = (self.lo - origins[:, None, :]) * inv
        t_hi = (self.hi - origins[:, None, :]) * inv
        near = torch.minimum(t_lo, t_hi).amax(-1)
        far = torch.maximum(t_lo, t_hi).amin(-1)
        t = torch.where(self.hollow, far, near)
        return torch.where((far >= near) & (t > T_MIN), t, torch.full_like(t, math.inf))

    def signed_distance(self, points: Tensor) -> Tensor:
        q = (points[:, None, :] - (self.lo + self.hi) / 2).abs() - (self.hi - self.lo) / 2
        solid = q.clamp(min=0).norm(dim=-1) + q.amax(-1).clamp(max=0)
        return torch.where(self.hollow, -solid, solid)

    def normals(self, points: Tensor, index: Tensor) -> Tensor:
        """Normals of the nearest face, facing the visible side (flat boxes face +axis)."""
        gaps = torch.cat([(self.hi[index] - points).abs(), (points - self.lo[index]).abs()], dim=-1)
        face = gaps.argmin(-1)
        sign = torch.where(face < 3, 1.0, -1.0) * torch.where(self.hollow[index], -1.0, 1.0)
        return torch.nn.functional.one_hot(face % 3, 3).to(points.dtype) * sign.to(points.dtype)[:, None]

    def face_areas(self) -> Tensor:
        """Areas ``[n,6]`` of the +x,+y,+z,-x,-y,-z faces; a flat box keeps only its + face."""
        size = self.hi - self.lo
        per_axis = size[:, [1, 0, 0]] * size[:, [2, 2, 1]]
        return torch.cat([per_axis, per_axis * (size > 0)], dim=-1)

    def areas(self) -> Tensor:
        return self.face_areas().sum(-1)

    def sample(self, index: Tensor, generator: torch.Generator) -> Tensor:
        lo, hi = self.lo[index], self.hi[index]
        face = torch.multinomial(self.face_areas()[index], 1, generator=generator)[:, 0]
        points = lo + _uniform(lo.shape, lo, generator) * (hi - lo)
        axis = (face % 3)[:, None]
        plane = torch.where(face[:, None] < 3, hi.gather(1, axis), lo.gather(1, axis))
        return points.scatter(1, axis, plane)


@dataclass(frozen=True, eq=False)
class Spheres(_Tensors):
    center: Tensor  # [n,3]
    radius: Tensor  # [n]

    def intersect(self, origins: Tensor, directions: Tensor) -> Tensor:
        """Near root of ``|o + t d - c|² = r²`` in the cancellation-free form ``c / (-b + √disc)``."""
        oc = origins[:, None, :] - self.center
        a = (directions * directions).sum(-1, keepdim=True)
        b = (oc * directions[:, None, :]).sum(-1)
        c = (oc * oc).sum(-1) - self.radius**2
        disc = b * b - a * c
        t = c / (-b + disc.clamp(min=0).sqrt())
        hit = (disc >= 0) & (b < 0) & (c > 0) & (t > T_MIN)
        return torch.where(hit, t, torch.full_like(t, math.inf))

    def signed_distance(self, points: Tensor) -> Tensor:
        return (points[:, None, :] - self.center).norm(dim=-1) - self.radius

    def normals(self, points: Tensor, index: Tensor) -> Tensor:
        return (points - self.center[index]) / self.radius[index, None]

    def areas(self) -> Tensor:
        return 4 * math.pi * self.radius**2

    def sample(self, index: Tensor, generator: torch.Generator) -> Tensor:
        center = self.center[index]
        gauss = torch.randn(center.shape, generator=generator, dtype=center.dtype, device=center.device)
        return center + torch.nn.functional.normalize(gauss, dim=-1) * self.radius[index, None]


@dataclass(frozen=True, eq=False)
class Cylinders(_Tensors):
    """Capped cylinders with a vertical (z) axis through ``axis_xy``, spanning ``[z_lo, z_hi]``."""

    axis_xy: Tensor  # [n,2]
    radius: Tensor  # [n]
    z_lo: Tensor  # [n]
    z_hi: Tensor  # [n]

    def intersect(self, origins: Tensor, directions: Tensor) -> Tensor:
        """Nearer of the side entry (a 2D circle root, as for spheres) and the cap facing the origin."""
        oxy = origins[:, None, :2] - self.axis_xy
        dxy = directions[:, None, :2]
        a = (dxy * dxy).sum(-1)
        b = (oxy * dxy).sum(-1)
        c = (oxy * oxy).sum(-1) - self.radius**2
        disc = b * b - a * c
        t_side = c / (-b + disc.clamp(min=0).sqrt())
        z_side = origins[:, None, 2] + t_side * directions[:, None, 2]
        side = (disc >= 0) & (b < 0) & (c > 0) & (z_side >= self.z_lo) & (z_side <= self.z_hi)
        oz = origins[:, None, 2]
        above = oz > self.z_hi
        t_cap = (torch.where(above, self.z_hi, self.z_lo) - oz) * _safe_reciprocal(directions[:, None, 2])
        cap_xy = oxy + t_cap[..., None] * dxy
        cap = (above | (oz < self.z_lo)) & ((cap_xy * cap_xy).sum(-1) <= self.radius**2)
        inf = torch.full_like(t_side, math.inf)
        t_side = torch.where(side & (t_side > T_MIN), t_side, inf)
        return torch.minimum(t_side, torch.where(cap & (t_cap > T_MIN), t_cap, inf))

    def signed_distance(self, points: Tensor) -> Tensor:
        radial = (points[:, None, :2] - self.axis_xy).norm(dim=-1) - self.radius
        axial = (points[:, None, 2] - (self.z_lo + self.z_hi) / 2).abs() - (self.z_hi - self.z_lo) / 2
        q = torch.stack([radial, axial], dim=-1)
        return q.clamp(min=0).norm(dim=-1) + q.amax(-1).clamp(max=0)

    def normals(self, points: Tensor, index: Tensor) -> Tensor:
        radial_vec = points[:, :2] - self.axis_xy[index]
        radial = radial_vec.norm(dim=-1) - self.radius[index]
        top = points[:, 2] - self.z_hi[index]
        bottom = points[:, 2] - self.z_lo[index]
        on_side = radial.abs() <= torch.minimum(top.abs(), bottom.abs())
        side_normal = torch.nn.functional.pad(torch.nn.functional.normalize(radial_vec, dim=-1), (0, 1))
        cap_sign = torch.where(top.abs() < bottom.abs(), 1.0, -1.0).to(points.dtype)
        cap_normal = torch.nn.functional.pad(cap_sign[:, None], (2, 0))
        return torch.where(on_side[:, None], side_normal, cap_normal)

    def part_areas(self) -> Tensor:
        """Areas ``[n,3]`` of the side, the top cap and the bottom cap."""
        cap = math.pi * self.radius**2
        return torch.stack([2 * math.pi * self.radius * (self.z_hi - self.z_lo), cap, cap], dim=-1)

    def areas(self) -> Tensor:
        return self.part_areas().sum(-1)

    def sample(self, index: Tensor, generator: torch.Generator) -> Tensor:
        radius, z_lo, z_hi = self.radius[index], self.z_lo[index], self.z_hi[index]
        part = torch.multinomial(self.part_areas()[index], 1, generator=generator)[:, 0]
        u = _uniform((len(index), 2), radius, generator)
        angle = 2 * math.pi * u[:, 0]
        rho = torch.where(part == 0, radius, radius * u[:, 1].sqrt())
        z = torch.where(part == 0, z_lo + u[:, 1] * (z_hi - z_lo), torch.where(part == 1, z_hi, z_lo))
        xy = self.axis_xy[index] + rho[:, None] * torch.stack([angle.cos(), angle.sin()], dim=-1)
        return torch.cat([xy, z[:, None]], dim=-1)


@dataclass(frozen=True, eq=False)
class Geometry:
    """All primitives of a scene; global ids number boxes, then spheres, then cylinders."""

    boxes: Boxes
    spheres: Spheres
    cylinders: Cylinders

    @property
    def families(self) -> tuple[Family, ...]:
        return (self.boxes, self.spheres, self.cylinders)

    def __len__(self) -> int:
        return sum(len(f) for f in self.families)

    def to(self, device: torch.device, dtype: torch.dtype) -> Geometry:
        return Geometry(*(f.to(device, dtype) for f in self.families))  # type: ignore[arg-type]

    def _ranges(self) -> list[tuple[Family, int, int]]:
        out, start = [], 0
        for family in self.families:
            out.append((family, start, start + len(family)))
            start += len(family)
        return out

    def cast(self, origins: Tensor, directions: Tensor) -> tuple[Tensor, Tensor]:
        """Closest hit over all primitives: ray parameter ``[R]`` (``inf`` on a miss) and id ``[R]`` (-1)."""
        t_all = torch.cat([f.intersect(origins, directions) for f in self.families], dim=1)
        t, ids = t_all.min(dim=1)
        return t, torch.where(torch.isinf(t), -1, ids)

    def signed_distance(self, points: Tensor) -> Tensor:
        """Signed distance ``[M,P]`` of every point to every primitive."""
        return torch.cat([f.signed_distance(points) for f in self.families], dim=1)

    def _per_family(self, ids: Tensor, like: Tensor, fn: Callable[[Family, Tensor, Tensor], Tensor]) -> Tensor:
        """``[M,3]`` rows from ``fn(family, mask, local_index)`` for the ids of each family."""
        out = torch.zeros(len(ids), 3, dtype=like.dtype, device=like.device)
        for family, start, stop in self._ranges():
            mask = (ids >= start) & (ids < stop)
            if mask.any():
                out[mask] = fn(family, mask, ids[mask] - start)
        return out

    def normals(self, points: Tensor, ids: Tensor) -> Tensor:
        """Unit normals ``[M,3]`` of surface points on primitives ``ids``, facing the visible side."""
        return self._per_family(ids, points, lambda f, mask, index: f.normals(points[mask], index))

    def areas(self) -> Tensor:
        """Surface area of every primitive ``[P]``."""
        return torch.cat([f.areas() for f in self.families])

    def sample(self, ids: Tensor, generator: torch.Generator) -> Tensor:
        """One uniform-by-area point on each primitive of ``ids`` ``[M,3]``."""
        return self._per_family(ids, self.boxes.lo, lambda f, mask, index: f.sample(index, generator))

    def bounds(self) -> tuple[Tensor, Tensor]:
        """Axis-aligned bounds ``([3], [3])`` of every primitive together."""
        b, s, c = self.boxes, self.spheres, self.cylinders
        r = c.radius[:, None]
        lows = [b.lo, s.center - s.radius[:, None], torch.cat([c.axis_xy - r, c.z_lo[:, None]], -1)]
        highs = [b.hi, s.center + s.radius[:, None], torch.cat([c.axis_xy + r, c.z_hi[:, None]], -1)]
        return torch.cat(lows).amin(0), torch.cat(highs).amax(0)
