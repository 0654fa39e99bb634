"""Reconstruction from depth the generator supplies, with the requested (known) cameras."""

from __future__ import annotations

import torch

from worldstereo.errors import ConfigurationError
from worldstereo.pipeline.backends import (
    GeneratedVideo,
    GenerationRequest,
    Reconstruction,
    Reconstructor,
    Resources,
)


class RenderedDepthReconstructor(Reconstructor):
    """Per-frame z-depth through the target cameras (back-projected by Eq. 1 when used; valid where finite and
    positive): already in the world frame."""

    name = "rendered-depth"
    resources = Resources(cpus=1.0, memory_gb=1.0)

    def reconstruct(self, video: GeneratedVideo, request: GenerationRequest) -> Reconstruction:
        if video.depth is None:
            raise ConfigurationError(
                "the rendered-depth reconstructor needs a generator that returns depth (oracle, warp); "
                "use --reconstructor depth-anything-3 (or worldmirror) with image-only generators"
            )
        return Reconstruction(video.frames, None, request.cameras, depth=video.depth.to(torch.float32))
