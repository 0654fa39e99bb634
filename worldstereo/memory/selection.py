"""Reducing a set of candidate reference frames to a few diverse, sharp ones (the released retrieval's selector).

Each candidate is described by standardised camera features (centre, w2c-rotation quaternion) weighted 0.3
and, when an image encoder is given, standardised image features weighted 0.7. Quality-aware furthest-point
sampling then starts at the candidate nearest the centroid (nudged by quality) and repeatedly takes the one
furthest from those chosen, its distance scaled by ``1 + 0.1 (q - 0.5)`` with ``q`` the min-max normalised
image quality.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from worldstereo.geometry.camera import Camera
from worldstereo.geometry.rotations import rotation_to_quaternion

CAMERA_WEIGHT, IMAGE_WEIGHT, QUALITY_BIAS = 0.3, 0.7, 0.1
_EPS = 1e-8
# cv2's BGR2GRAY weights applied to RGB data, as the release does
_GREY = (0.114, 0.587, 0.299)

ImageFeatures = Callable[[Tensor], Tensor]  # images [N,H,W,3] in [0,1] -> features [N,D]


def camera_features(cameras: Camera) -> Tensor:
    """``[N,7]``: camera centre and the w2c rotation's quaternion (x, y, z, w; w >= 0)."""
    quaternion = rotation_to_quaternion(cameras.w2c[:, :3, :3])
    return torch.cat([cameras.centers.double(), quaternion[:, 1:], quaternion[:, :1]], dim=-1)


def standardise(features: Tensor) -> Tensor:
    """Zero mean, unit (population) variance per column."""
    return (features - features.mean(0)) / (features.std(0, unbiased=False) + _EPS)


def image_quality(images: Tensor) -> Tensor:
    """``[N]`` of images ``[N,H,W,3]`` in [0,1]: 0.4 log1p(Laplacian variance) + 0.3 grey-level entropy (bits) + 0.3 grey std / 128 (8-bit grey)."""
    weights = torch.tensor(_GREY, dtype=torch.float64, device=images.device)
    grey = ((images.double().clamp(0, 1) * 255).round() @ weights).round()  # [N,H,W] in 0..255
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64,
                          device=images.device)
    padded = F.pad(grey[:, None], (1, 1, 1, 1), mode="reflect")
    laplacian = F.conv2d(padded, kernel[None, None])[:, 0]
    sharpness = laplacian.flatten(1).var(dim=1, unbiased=False)
    counts = F.one_hot(grey.flatten(1).long(), 256).sum(dim=1).double()
    p = counts / counts.sum(dim=1, keepdim=True) + 1e-10
    entropy = -(p * torch.log2(p)).sum(dim=1)
    contrast = grey.flatten(1).std(dim=1, unbiased=False)
    return 0.4 * torch.log1p(sharpness) + 0.3 * entropy + 0.3 * contrast / 128.0


def quality_aware_fps(features: Tensor, quality: Tensor, count: int, bias: float = QUALITY_BIAS) -> Tensor:
    """Indices ``[count]`` picked by furthest-point sampling with distances scaled by normalised quality."""
    q = (quality - quality.min()) / (quality.max() - quality.min() + _EPS)
    factor = 1.0 + bias * (q - 0.5)
    centroid_distance = (features - features.mean(0)).norm(dim=1)
    current = int(torch.argmax(-centroid_distance + bias * q))
    chosen = [current]
    nearest = torch.full((len(features),), math.inf, dtype=features.dtype, device=features.device)
    for _ in range(count - 1):
        nearest = torch.minimum(nearest, (features - features[current]).norm(dim=1))
        adjusted = nearest * factor
        adjusted[chosen] = -math.inf
        current = int(torch.argmax(adjusted))
        chosen.append(current)
    return torch.tensor(chosen, dtype=torch.long, device=features.device)


def select_references(
    cameras: Camera, images: Sequence[Tensor], count: int, encoder: ImageFeatures | None = None
) -> Tensor:
    """Indices of ``count`` of the candidates (``cameras``, images ``[H,W,3]`` of any sizes) by quality-aware FPS."""
    features = standardise(camera_features(cameras)) * CAMERA_WEIGHT
    if encoder is not None:
        encoded = torch.cat([encoder(image[None]).double().cpu() for image in images]).to(features.device)
        features = torch.cat([features, standardise(encoded) * IMAGE_WEIGHT], dim=1)
    quality = torch.cat([image_quality(image[None]) for image in images]).to(features.device)
    return quality_aware_fps(features, quality, count)
