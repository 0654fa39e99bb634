"""The splat training loss: L1 + D-SSIM, a depth term, scale and opacity regularisation."""

from __future__ import annotations

import torch
from torch import Tensor

from worldstereo.evaluation.image_metrics import ssim


def photometric_loss(rgb: Tensor, target: Tensor, ssim_weight: float) -> Tensor:
    """(1 - lambda) L1 + lambda (1 - SSIM) (3DGS Eq. 7)."""
    l1 = (rgb - target).abs().mean()
    if ssim_weight == 0 or min(rgb.shape[:2]) < 11:
        return l1
    return (1 - ssim_weight) * l1 + ssim_weight * (1 - ssim(rgb, target))


def depth_loss(depth: Tensor, target: Tensor) -> Tensor:
    """Mean relative error |d - d*| / d* where the frame has a depth (``target > 0``)."""
    known = target > 0
    if not known.any():
        return depth.sum() * 0
    return ((depth[known] - target[known]).abs() / target[known]).mean()


def regularisation(params: dict[str, Tensor], extent: float, scale_weight: float, opacity_weight: float) -> Tensor:
    """Mean Gaussian scale (relative to the scene's ``extent``) and mean opacity, weighted."""
    return (scale_weight * torch.exp(params["scales"]).mean() / extent
            + opacity_weight * torch.sigmoid(params["opacities"]).mean())
