"""Encoding frames as MP4 / JPEG bytes, videos in the background while the caller does other work."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import imageio.v3 as iio
import numpy as np
from torch import Tensor

from worldstereo.png import quantize

_ENCODERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="encode")


def to_uint8(frames: Tensor) -> np.ndarray:
    """``[...,H,W,3]`` floats in [0,1] → uint8 array."""
    return quantize(frames).numpy()


def encode_video(frames: Tensor, fps: int, preset: str) -> bytes:
    """H.264 MP4 of ``[N,H,W,3]`` frames in [0,1] with libx264 ``preset`` (sizes padded to even by the macro-block rule)."""
    return iio.imwrite("<bytes>", to_uint8(frames), extension=".mp4", fps=fps, codec="libx264",
                       macro_block_size=2, output_params=["-preset", preset])


def encode_video_later(frames: Tensor, fps: int, preset: str) -> Future[bytes]:
    """:func:`encode_video` on a background thread (ffmpeg runs in its own process); ``frames`` must not change."""
    return _ENCODERS.submit(encode_video, frames, fps, preset)


def encode_jpeg(image: Tensor, quality: int = 92) -> bytes:
    """JPEG of one ``[H,W,3]`` image in [0,1]."""
    return iio.imwrite("<bytes>", to_uint8(image), extension=".jpg", quality=quality)
