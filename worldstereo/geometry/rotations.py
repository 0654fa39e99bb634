"""Rotations as unit quaternions (w, x, y, z) and their geodesic interpolation."""

from __future__ import annotations

import torch
from torch import Tensor


def rotation_to_quaternion(R: Tensor) -> Tensor:
    """Unit quaternions ``[N,4]`` (w, x, y, z; w >= 0) of rotations ``[N,3,3]``."""
    R = R.double()
    m00, m11, m22 = R[:, 0, 0], R[:, 1, 1], R[:, 2, 2]
    q = torch.stack([
        1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22,
    ], dim=-1).clamp_min(0).sqrt() / 2
    # signs of x, y, z from the antisymmetric part
    q[:, 1] = torch.copysign(q[:, 1], R[:, 2, 1] - R[:, 1, 2])
    q[:, 2] = torch.copysign(q[:, 2], R[:, 0, 2] - R[:, 2, 0])
    q[:, 3] = torch.copysign(q[:, 3], R[:, 1, 0] - R[:, 0, 1])
    return torch.nn.functional.normalize(q, dim=-1)


def quaternion_to_rotation(q: Tensor) -> Tensor:
    """Rotations ``[N,3,3]`` of quaternions ``[N,4]`` (w, x, y, z; normalised first)."""
    w, x, y, z = torch.nn.functional.normalize(q, dim=-1).unbind(-1)
    return torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], dim=-1),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], dim=-1),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], dim=-1),
    ], dim=-2)


def slerp(q0: Tensor, q1: Tensor, s: Tensor) -> Tensor:
    """Shortest-arc interpolation of unit quaternions ``[N,4]`` at fractions ``s [N]`` (0: ``q0``, 1: ``q1``)."""
    dot = (q0 * q1).sum(dim=-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)  # q and -q are one rotation: take the short way
    theta = torch.arccos(dot.abs().clamp(max=1.0))
    s = s[:, None].to(q0)
    sin = torch.sin(theta)
    small = sin < 1e-9  # nearly equal: linear interpolation is exact to second order
    a = torch.where(small, 1 - s, torch.sin((1 - s) * theta) / torch.where(small, 1.0, sin))
    b = torch.where(small, s, torch.sin(s * theta) / torch.where(small, 1.0, sin))
    return torch.nn.functional.normalize(a * q0 + b * q1, dim=-1)
