"""Encoding frames as MP4 / JPEG bytes."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import torch
from torch import Tensor


def to_uint8(frames: Tensor) -> np.ndarray:
    """``[...,H,W,3]`` floats in [0,1] → uint8 array."""
    return (frames.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


def encode_video(frames: Tensor, fps: int) -> bytes:
    """H.264 MP4 of ``[N,H,W,3]`` frames in [0,1] (sizes padded to even by the encoder's macro-block rule)."""
    return iio.imwrite("<bytes>", to_uint8(frames), extension=".mp4", fps=fps, codec="libx264",
                       macro_block_size=2)


def encode_jpeg(image: Tensor, quality: int = 92) -> bytes:
    """JPEG of one ``[H,W,3]`` image in [0,1]."""
    return iio.imwrite("<bytes>", to_uint8(image), extension=".jpg", quality=quality)
