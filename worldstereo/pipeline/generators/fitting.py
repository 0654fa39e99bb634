"""Fitting a request's images to a video model's size, and back."""

from __future__ import annotations

import math
from typing import Literal

import torch.nn.functional as F
from torch import Tensor


def model_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """``height x width`` rounded up to multiples of ``multiple``."""
    return multiple * math.ceil(height / multiple), multiple * math.ceil(width / multiple)


def resize(images: Tensor, size: tuple[int, int], mode: Literal["bilinear", "nearest"]) -> Tensor:
    """``[N,H,W,C]`` resampled to ``size``: antialiased bilinear, or the nearest source pixel centre."""
    if tuple(images.shape[1:3]) == tuple(size):
        return images
    channels_first = images.permute(0, 3, 1, 2)
    if mode == "bilinear":
        out = F.interpolate(channels_first, size=size, mode="bilinear", antialias=True, align_corners=False)
    else:
        out = F.interpolate(channels_first, size=size, mode="nearest-exact")
    return out.permute(0, 2, 3, 1)
