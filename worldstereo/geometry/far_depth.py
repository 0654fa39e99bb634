"""Far depth pulled in smoothly beyond a multiple of each image's median depth, as the released cache renderer does.

One rule for every depth that enters the 3D cache (the input's depth, each reconstructed frame) and so for
every export made from it: with ``m = ratio x`` the image's median depth, ``d' = d`` up to ``m`` and
``2m - m²/d`` beyond, so a 10 km sky behind a 2 m subject lands below 32 m instead of stretching the cloud.
+inf (no surface) stays +inf.
"""

from __future__ import annotations

import torch
from torch import Tensor

from worldstereo.geometry.camera import Camera


def compress_far_depth(depth: Tensor, m: Tensor | float) -> Tensor:
    """Depth beyond ``m > 0`` pulled in smoothly: continuous and C¹ at ``m``, increasing, bounded by ``2m``; +inf kept."""
    m = torch.as_tensor(m, dtype=depth.dtype, device=depth.device)
    far = (depth > m) & (depth < torch.inf)
    return torch.where(far, 2 * m - m * m / depth, depth)  # d' = 2m - m²/d for d > m


def far_limits(depth: Tensor, ratio: float, valid: Tensor | None = None) -> Tensor:
    """``m = ratio x`` the median of each image's finite positive depth: ``[...]`` for depth ``[...,H,W]`` (NaN if none)."""
    usable = torch.isfinite(depth) & (depth > 0)
    if valid is not None:
        usable &= valid
    median = depth.masked_fill(~usable, float("nan")).flatten(-2).nanmedian(dim=-1).values
    return ratio * median


def compress_far(depth: Tensor, ratio: float | None) -> Tensor:
    """:func:`compress_far_depth` of each image ``[...,H,W]`` at ``ratio x`` its own median (``None``: unchanged)."""
    if ratio is None:
        return depth
    return compress_far_depth(depth, far_limits(depth, ratio)[..., None, None])


def compress_far_points(points: Tensor, valid: Tensor, cameras: Camera, ratio: float | None) -> Tensor:
    """Points ``[N,H,W,3]`` seen by ``cameras`` moved along their rays so their z-depth is :func:`compress_far`'s."""
    if ratio is None:
        return points
    centers = cameras.centers.to(points)[:, None, None]
    offsets = points - centers
    depth = (offsets * cameras.forward.to(points)[:, None, None]).sum(dim=-1)
    m = far_limits(depth, ratio, valid)[:, None, None]
    scale = compress_far_depth(depth, m) / depth
    return torch.where(((depth > m) & valid)[..., None], centers + offsets * scale[..., None], points)
