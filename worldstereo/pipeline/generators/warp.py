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
        stacked = torch.cat([render.rgb.permute(0, 3, 1, 2).float(), render.depth[:, None].float()], dim=1)
        filled = push_pull_fill(stacked, covered)  # colour and depth share the weights: one pyramid
        rgb = filled[:, :3].permute(0, 2, 3, 1).contiguous()
        depth = filled[:, 3]
        rgb[0] = request.image.to(rgb)
        return GeneratedVideo(frames=rgb.clamp_(0, 1), depth=torch.where(depth > 0, depth, torch.inf))
