"""Resampling a per-pixel map from one camera to another camera with the same pose."""

from __future__ import annotations

import torch
from torch import Tensor

from worldstereo.geometry.camera import Camera


def resample_nearest(values: Tensor, source: Camera, target: Camera) -> Tensor:
    """``values [H,W,...]`` seen by ``source`` (1 camera) resampled to ``target``'s pixels by nearest neighbour.

    Both cameras share one pose, so z-depth and colours carry over along the same rays; nearest
    sampling never blends across depth edges. Pixels outside the source image take +inf for floats.
    """
    rays = torch.einsum("ij,hwj->hwi", torch.linalg.inv(target.K[0].double()), target.pixel_grid().double())
    pix = torch.einsum("ij,hwj->hwi", source.K[0].double(), rays)
    u = torch.floor(pix[..., 0] / pix[..., 2]).long()
    v = torch.floor(pix[..., 1] / pix[..., 2]).long()
    inside = (u >= 0) & (u < source.width) & (v >= 0) & (v < source.height)
    out = values[v.clamp(0, source.height - 1), u.clamp(0, source.width - 1)]
    fill = torch.full_like(out, torch.inf) if out.dtype.is_floating_point else torch.zeros_like(out)
    return torch.where(inside.reshape(inside.shape + (1,) * (out.ndim - 2)), out, fill)
