"""Aspect-ratio buckets at 480p and the exact resize-then-centre-crop that fits an image into one."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from worldstereo.errors import InvalidInputError
from worldstereo.geometry.camera import Camera

BUCKETS_480P: tuple[tuple[int, int], ...] = (
    (480, 768),
    (512, 720),
    (576, 640),
    (608, 608),
    (640, 576),
    (720, 512),
    (768, 480),
)
"""Training resolutions ``(H, W)`` of the video backbone, landscape to portrait."""


def nearest_bucket(
    height: int, width: int, buckets: tuple[tuple[int, int], ...] = BUCKETS_480P
) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest to ``height / width`` in log scale (portrait and landscape alike)."""
    if height <= 0 or width <= 0:
        raise InvalidInputError(f"image size must be positive, got {height}x{width}")
    target = math.log(height / width)
    return min(buckets, key=lambda hw: abs(math.log(hw[0] / hw[1]) - target))


def fit_to_bucket(image: Tensor, camera: Camera, bucket: tuple[int, int]) -> tuple[Tensor, Camera]:
    """Resize ``image [H,W,C]`` so it covers ``bucket``, then centre-crop to it; ``camera`` follows exactly.

    The resize maps pixel edges to pixel edges per axis (``x' = x * W'/W``), as does the antialiased
    bilinear resampling, and the crop subtracts its offset, so every 3D point projects to the same
    image content before and after. Integer images are rounded back to their dtype.
    """
    if image.ndim != 3:
        raise InvalidInputError(f"image must be [H,W,C], got {tuple(image.shape)}")
    height, width = image.shape[:2]
    if (camera.height, camera.width) != (height, width):
        raise InvalidInputError(
            f"camera is {camera.height}x{camera.width} but the image is {height}x{width}"
        )
    out_h, out_w = bucket
    scale = max(out_h / height, out_w / width)
    new_h, new_w = max(out_h, round(height * scale)), max(out_w, round(width * scale))
    top, left = (new_h - out_h) // 2, (new_w - out_w) // 2

    if (new_h, new_w) != (height, width):
        pixels = image.permute(2, 0, 1)[None].to(torch.float32)
        pixels = F.interpolate(pixels, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
        pixels = pixels[0].permute(1, 2, 0)
        if not image.dtype.is_floating_point:
            info = torch.iinfo(image.dtype)
            pixels = pixels.round_().clamp_(info.min, info.max)
        image = pixels.to(image.dtype)
    image = image[top : top + out_h, left : left + out_w].contiguous()
    return image, camera.resized(new_h, new_w).cropped(top, left, out_h, out_w)
