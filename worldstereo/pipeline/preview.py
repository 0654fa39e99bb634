"""Small preview images of a scene: a top-down view of the fused cloud."""

from __future__ import annotations

import torch
from torch import Tensor


def top_down_view(points: Tensor, colors: Tensor, up: Tensor, size: int = 256) -> Tensor:
    """Orthographic view ``[size,size,3]`` looking down ``-up``; the highest point wins each pixel."""
    up = torch.nn.functional.normalize(up.to(points), dim=0)
    helper = torch.tensor([1.0, 0.0, 0.0], dtype=points.dtype, device=points.device)
    if torch.abs(up @ helper) > 0.9:
        helper = torch.tensor([0.0, 1.0, 0.0], dtype=points.dtype, device=points.device)
    x = torch.nn.functional.normalize(torch.linalg.cross(helper, up, dim=0), dim=0)
    y = torch.linalg.cross(up, x, dim=0)
    planar = torch.stack([points @ x, points @ y], dim=-1)
    lo, hi = _quantile(planar, 0.01), _quantile(planar, 0.99)
    scale = (size - 1) / (hi - lo).max().clamp_min(1e-9)
    pix = ((planar - lo) * scale).round().long()
    inside = ((pix >= 0) & (pix < size)).all(dim=-1)
    pix, height, colors = pix[inside], (points @ up)[inside], colors[inside]
    flat = (size - 1 - pix[:, 1]) * size + pix[:, 0]
    highest = torch.full((size * size,), -torch.inf, dtype=height.dtype, device=height.device)
    highest = highest.scatter_reduce(0, flat, height, "amax")
    top = height == highest[flat]
    image = torch.zeros(size * size, 3, dtype=colors.dtype, device=colors.device)
    image[flat[top]] = colors[top]
    return image.reshape(size, size, 3)


def _quantile(values: Tensor, q: float) -> Tensor:
    """``values.quantile(q, dim=0)`` (linear interpolation) from its two order statistics, without a sort."""
    rank = q * (len(values) - 1)
    below = int(rank)
    low = values.kthvalue(below + 1, dim=0).values
    high = values.kthvalue(min(below + 2, len(values)), dim=0).values
    return torch.lerp(low, high, torch.tensor(rank - below, dtype=values.dtype, device=values.device))
