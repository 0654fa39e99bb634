"""Classical hole filling by push-pull interpolation (Gortler et al. 1996): a weighted image pyramid."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def push_pull_fill(values: Tensor, valid: Tensor) -> Tensor:
    """Fill pixels where ``valid`` is False from their valid surroundings.

    ``values`` is ``[N,C,H,W]``, ``valid`` ``[N,H,W]``. Valid pixels are returned unchanged; an image with
    no valid pixel comes back as zeros.
    """
    mean, weight = values * valid[:, None], valid[:, None].to(values.dtype)
    pyramid: list[tuple[Tensor, Tensor]] = []
    while min(mean.shape[-2:]) > 1:
        pyramid.append((mean, weight))
        # push: weighted 2x2 means; weights saturate at 1
        total = F.avg_pool2d(weight, 2, ceil_mode=True) * 4
        mean = F.avg_pool2d(mean * weight, 2, ceil_mode=True) * 4 / total.clamp_min(1e-12)
        weight = total.clamp(max=1.0)
    filled = mean
    for mean, weight in reversed(pyramid):
        # pull: where a level lacks weight, take the upsampled coarser estimate
        up = F.interpolate(filled, size=mean.shape[-2:], mode="bilinear", align_corners=False)
        filled = weight * mean + (1 - weight) * up
    return torch.where(valid[:, None], values, filled)
