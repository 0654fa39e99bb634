"""Fitting a request's images to a video model's size, and back."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

Mode = Literal["bilinear", "bicubic", "nearest", "nearest-exact"]


def model_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """``height x width`` rounded up to multiples of ``multiple``."""
    return multiple * math.ceil(height / multiple), multiple * math.ceil(width / multiple)


def resize(images: Tensor, size: tuple[int, int], mode: Mode) -> Tensor:
    """``[N,H,W,C]`` resampled to ``size`` by torch's ``mode``; ``bilinear`` is antialiased, ``bicubic`` is not
    (as the release's data code resamples its videos), ``nearest`` takes source pixel ``⌊i·H/H'⌋``,
    ``nearest-exact`` the nearest source pixel centre."""
    if tuple(images.shape[1:3]) == tuple(size):
        return images
    channels_first = images.permute(0, 3, 1, 2)
    if mode == "bilinear":
        out = F.interpolate(channels_first, size=size, mode="bilinear", antialias=True, align_corners=False)
    elif mode == "bicubic":
        out = F.interpolate(channels_first, size=size, mode="bicubic", align_corners=False)
    else:
        out = F.interpolate(channels_first, size=size, mode=mode)
    return out.permute(0, 2, 3, 1)


def pil_bicubic(image: Tensor, size: tuple[int, int]) -> Tensor:
    """``[H,W,3]`` in [0, 1] as 8-bit RGB resized to ``size`` by PIL's bicubic filter (the release's input image)."""
    if tuple(image.shape[:2]) == tuple(size):
        return image
    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    resized = Image.fromarray(pixels).resize((size[1], size[0]), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(resized).copy()).to(image.device, torch.float32) / 255
