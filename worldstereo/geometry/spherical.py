"""Equirectangular conventions: a z-up world, the panorama centre at the origin.

Column ``u`` maps to longitude ``lon = π - 2π (u + 0.5) / W`` (the image centre looks along +x, the
view turns right as ``u`` grows), row ``v`` to latitude ``lat = π/2 - π (v + 0.5) / H`` (top row up).
Panoramic depth is the Euclidean distance from the centre along the ray.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

WORLD_UP = (0.0, 0.0, 1.0)


def equirect_angles(height: int, width: int, *, dtype=torch.float64, device=None) -> tuple[Tensor, Tensor]:
    """Longitude and latitude of every pixel centre, each ``[H,W]``."""
    u = torch.arange(width, dtype=dtype, device=device) + 0.5
    v = torch.arange(height, dtype=dtype, device=device) + 0.5
    lon = math.pi - 2 * math.pi * u / width
    lat = math.pi / 2 - math.pi * v / height
    lat, lon = torch.meshgrid(lat, lon, indexing="ij")
    return lon, lat


def angles_to_directions(lon: Tensor, lat: Tensor) -> Tensor:
    """Unit directions ``[...,3]`` in the z-up world."""
    return torch.stack(
        [torch.cos(lat) * torch.cos(lon), torch.cos(lat) * torch.sin(lon), torch.sin(lat)], dim=-1
    )


def equirect_directions(height: int, width: int, *, dtype=torch.float64, device=None) -> Tensor:
    """Unit ray directions ``[H,W,3]`` of an equirectangular image."""
    return angles_to_directions(*equirect_angles(height, width, dtype=dtype, device=device))


def directions_to_equirect(directions: Tensor, height: int, width: int) -> Tensor:
    """Continuous pixel coordinates ``[...,2]`` (pixel ``i`` spans ``[i, i+1)``, as ``Camera.project``)."""
    lon = torch.atan2(directions[..., 1], directions[..., 0])
    lat = torch.asin(directions[..., 2].clamp(-1.0, 1.0))
    u = (math.pi - lon) / (2 * math.pi) * width
    v = (math.pi / 2 - lat) / math.pi * height
    return torch.stack([torch.remainder(u, width), v], dim=-1)
