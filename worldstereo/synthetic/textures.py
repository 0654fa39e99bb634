"""View-independent procedural materials.

A colour is a pure function of the 3D surface point, its primitive and its (fixed) surface normal:
two colours mixed by a 3D checker, stripe or value-noise pattern, modulated by fine value noise and a
fixed directional shading. The same point therefore has the same colour from every camera.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

CHECKER, STRIPES, NOISE = 0, 1, 2
BACKGROUND = (0.70, 0.80, 0.95)  # colour of rays that hit nothing
_LIGHT = (0.35, 0.25, 0.90)  # fixed light direction for shading by normal
_STRIPE_AXIS = (1.0, 2.0, 3.0)  # oblique, so stripes show on every axis-aligned face
_PRIMES = (73856093, 19349663, 83492791)  # spatial hash of lattice cells
_SEED_PRIME = 2654435761
_MASK32 = 0xFFFFFFFF


def _mix01(h: Tensor) -> Tensor:
    """Integer hash (two xorshift-multiply rounds on 32 bits) → uniform values in ``[0,1)``."""
    h = h & _MASK32
    for mult in (0x2C1B3C6D, 0x297A2D39):
        h = ((h ^ (h >> 15)) * mult) & _MASK32
    return ((h ^ (h >> 15)) & 0xFFFFFF).double() / float(1 << 24)


def value_noise(points: Tensor, seed: Tensor) -> Tensor:
    """Smooth 3D value noise in ``[0,1]`` at ``points [M,3]`` (unit lattice), one lattice per ``seed [M]``."""
    cell = points.floor()
    frac = points - cell
    smooth = frac * frac * (3 - 2 * frac)
    corner = cell.long()[:, :, None] + torch.arange(2, device=points.device)  # [M,3,2]: the two lattice planes per axis
    x, y, z = (corner[:, axis] * prime for axis, prime in enumerate(_PRIMES))
    x = x ^ (seed * _SEED_PRIME)[:, None]
    values = _mix01(x[:, :, None, None] ^ y[:, None, :, None] ^ z[:, None, None, :]).to(points.dtype)  # [M,2,2,2]
    values = torch.lerp(values[..., 0], values[..., 1], smooth[:, None, None, 2])
    values = torch.lerp(values[..., 0], values[..., 1], smooth[:, None, 1])
    return torch.lerp(values[..., 0], values[..., 1], smooth[:, 0])


def checker(points: Tensor) -> Tensor:
    """3D checkerboard of unit cells, values 0 or 1."""
    return torch.remainder(points.floor().sum(-1), 2)


def stripes(points: Tensor) -> Tensor:
    """Smooth stripes of unit period along an oblique axis, values in ``[0,1]``."""
    axis = torch.nn.functional.normalize(torch.tensor(_STRIPE_AXIS, dtype=points.dtype, device=points.device), dim=0)
    return 0.5 + 0.5 * torch.cos(2 * math.pi * (points @ axis))


def shading(normals: Tensor) -> Tensor:
    """Fixed directional shading ``[M]`` in ``[0.6, 1]``; depends on the surface, never on the camera."""
    light = torch.nn.functional.normalize(torch.tensor(_LIGHT, dtype=normals.dtype, device=normals.device), dim=0)
    return 0.6 + 0.4 * (normals @ light).clamp(min=0)


_PATTERNS = {
    CHECKER: lambda points, seed: checker(points),
    STRIPES: lambda points, seed: stripes(points),
    NOISE: value_noise,
}


@dataclass(frozen=True)
class Material:
    """One primitive's look: two colours, a pattern of period ``scale`` metres, a lattice phase and a noise seed."""

    base: tuple[float, float, float]
    accent: tuple[float, float, float]
    pattern: int
    scale: float
    offset: tuple[float, float, float]
    noise_seed: int

    @classmethod
    def random(cls, rng: np.random.Generator) -> Material:
        hue, sat, val = rng.uniform(), rng.uniform(0.25, 0.75), rng.uniform(0.55, 0.9)
        accent_hue = (hue + rng.uniform(0.08, 0.35)) % 1.0
        return cls(
            base=colorsys.hsv_to_rgb(hue, sat, val),
            accent=colorsys.hsv_to_rgb(accent_hue, sat, val * rng.uniform(0.45, 0.75)),
            pattern=int(rng.integers(3)),
            scale=float(rng.uniform(0.15, 0.6)),
            offset=tuple(float(v) for v in rng.uniform(0.0, 1.0, 3)),
            noise_seed=int(rng.integers(1 << 31)),
        )


@dataclass(frozen=True, eq=False)
class Appearance:
    """Materials of all primitives of a scene, indexed by primitive id."""

    base: Tensor  # [P,3]
    accent: Tensor  # [P,3]
    pattern: Tensor  # [P] int64
    scale: Tensor  # [P]
    offset: Tensor  # [P,3]
    noise_seed: Tensor  # [P] int64

    @classmethod
    def stack(cls, materials: list[Material]) -> Appearance:
        def column(name: str, dtype: torch.dtype) -> Tensor:
            return torch.tensor([getattr(m, name) for m in materials], dtype=dtype)

        return cls(
            base=column("base", torch.float64).reshape(-1, 3),
            accent=column("accent", torch.float64).reshape(-1, 3),
            pattern=column("pattern", torch.int64),
            scale=column("scale", torch.float64),
            offset=column("offset", torch.float64).reshape(-1, 3),
            noise_seed=column("noise_seed", torch.int64),
        )

    def colors(self, points: Tensor, ids: Tensor, normals: Tensor) -> Tensor:
        """RGB ``[M,3]`` float32 in ``[0,1]`` of surface points ``[M,3]`` on primitives ``ids [M]``."""
        ids = ids.to(points.device)
        p = points / self.scale.to(points)[ids, None] + self.offset.to(points)[ids]
        seed = self.noise_seed.to(points.device)[ids]
        pattern = self.pattern.to(points.device)[ids]
        mix = torch.empty_like(p[:, 0])
        for kind, fn in _PATTERNS.items():
            chosen = pattern == kind
            mix[chosen] = fn(p[chosen], seed[chosen])
        albedo = torch.lerp(self.base.to(points)[ids], self.accent.to(points)[ids], mix[:, None])
        detail = value_noise(4 * p, seed + 1)
        color = albedo * (0.75 + 0.5 * detail)[:, None] * shading(normals)[:, None]
        return color.clamp(0, 1).float()
