"""Classical hole filling by push-pull interpolation (Gortler et al. 1996): a weighted image pyramid."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def push_pull_fill(values: Tensor, valid: Tensor) -> Tensor:
    """Fill pixels where ``valid`` is False from their valid surroundings.

    ``values`` is ``[N,C,H,W]``, ``valid`` ``[N,H,W]``. Valid pixels are returned unchanged; an image with
    no valid pixel comes back as zeros. Channels share the weights, so filling colour and depth stacked
    equals filling each alone. The finest level's weights are 0 or 1, so its pull step is the final
    selection between the input and the upsampled estimate.
    """
    weight = valid[:, None].to(values.dtype)
    mean = weighted = values * weight
    pyramid: list[tuple[Tensor, Tensor]] = []
    while min(mean.shape[-2:]) > 1:
        pyramid.append((mean, weight))
        # push: weighted 2x2 means; weights saturate at 1
        total = F.avg_pool2d(weight, 2, ceil_mode=True).mul_(4)
        mean = F.avg_pool2d(weighted, 2, ceil_mode=True).mul_(4).div_(total.clamp_min(1e-12))
        weight = total.clamp_(max=1.0)
        weighted = mean * weight
    filled = mean
    for mean, weight in reversed(pyramid[1:]):
        # pull: where a level lacks weight, take the upsampled coarser estimate
        up = F.interpolate(filled, size=mean.shape[-2:], mode="bilinear", align_corners=False)
        filled = up.lerp_(mean, weight)  # weight * mean + (1 - weight) * up
    if pyramid:
        filled = F.interpolate(filled, size=values.shape[-2:], mode="bilinear", align_corners=False)
    return torch.where(valid[:, None], values, filled)
