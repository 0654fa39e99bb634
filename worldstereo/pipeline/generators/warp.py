"""The warp baseline: the GGM condition itself, holes filled classically. Weight-free; a lower bound."""

from __future__ import annotations

import torch

from worldstereo.geometry.holefill import push_pull_fill
from worldstereo.pipeline.backends import GeneratedVideo, GenerationRequest, Resources, VideoGenerator


class WarpGenerator(VideoGenerator):
    """Renders of the 3D cache into the target cameras with push-pull hole filling of colour and depth."""

    name = "warp"
    resources = Resources(cpus=1.0, memory_gb=2.0)

    def generate(self, request: GenerationRequest) -> GeneratedVideo:
        render = request.ggm
        covered = ~render.mask
        rgb = push_pull_fill(render.rgb.permute(0, 3, 1, 2).float(), covered).permute(0, 2, 3, 1)
        depth = torch.where(covered, render.depth, torch.zeros_like(render.depth)).float()
        depth = push_pull_fill(depth[:, None], covered)[:, 0]
        rgb[0] = request.image.to(rgb)
        return GeneratedVideo(frames=rgb.clamp(0, 1), depth=torch.where(depth > 0, depth, torch.inf))
