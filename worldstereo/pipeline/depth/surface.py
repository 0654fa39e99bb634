"""The input's depth as the 3D cache takes it: sky marked as no surface (+inf), far depth compressed."""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from worldstereo.config import Settings
from worldstereo.geometry.far_depth import compress_far, far_limits
from worldstereo.inputs import SceneInput
from worldstereo.pipeline.backends import DepthEstimate
from worldstereo.pipeline.depth.sky import sky_mask


def surface_depth(settings: Settings, scene: SceneInput, estimate: DepthEstimate) -> DepthEstimate:
    """``estimate`` with its sky at +inf and depth beyond ``memory.far_depth_ratio`` x its median compressed;
    ``info["masked"]`` records the sky's share of the pixels and the method, ``info["far_depth"]`` the
    compression limit and the share of pixels it moved."""
    sky, method = sky_mask(settings, scene.rgb, estimate.depth)
    depth = estimate.depth.masked_fill(sky, math.inf)
    ratio = settings.memory.far_depth_ratio
    compressed = compress_far(depth, ratio)
    limit = float(far_limits(depth, ratio)) if ratio is not None else math.inf
    info = {**estimate.info,
            "masked": {"sky_fraction": float(sky.float().mean()), "method": method},
            "far_depth": {"ratio": ratio, "limit": limit if math.isfinite(limit) else None,
                          "fraction": float((compressed != depth).float().mean())}}
    return replace(estimate, depth=compressed, info=info)
