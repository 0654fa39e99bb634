"""The release path of the pipeline-cost benchmark: the released generator with its network replaced by a
zero-cost stand-in, and the ``depth-anything-3`` reconstructor with a tiny network, network calls timed apart.

The stand-in keeps everything the ``worldstereo`` generator does around its network: bucket resizing (PIL
bicubic start frame, bicubic renders and references, nearest holes), reference choice, the camera
normalisation, Plücker rays and camera tokens the ControlNet reads, and the resize of the keyframes back to the
request's size. It answers the clip's cache renders as the keyframes. The reconstructor is the real one around
a ``DepthAnything3Net`` cut to its first five ViT blocks (per-view attention only) and an 8-channel head, with
random weights; its calls are timed by :class:`NetworkClock`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from worldstereo.config import Settings
from worldstereo.models.release.config import DMDSchedule, ReleaseConfig, release_controlnet
from worldstereo.models.release.model import KeyframeClip, camera_conditions
from worldstereo.pipeline.generators.worldstereo import WorldStereoGenerator
from worldstereo.pipeline.generators.worldstereo_paper import IMAGE, PROMPT
from worldstereo.pipeline.reconstructors.depth_anything_3 import DepthAnything3Reconstructor

BUCKETS_480P = ((480, 832), (608, 608), (832, 480))  # 480p aspect buckets (the release reads its own scale_map)
DA3_BLOCKS = 5  # ViT blocks kept: the four local ones and the one that takes the camera tokens
DA3_HEAD = {"features": 8, "out_channels": [8, 16, 32, 64]}


class NetworkClock:
    """Wall and CPU seconds spent inside the wrapped network calls."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self.calls = 0

    def timed(self, network: Callable) -> Callable:
        def call(*args, **kwargs):
            started, cpu = time.perf_counter(), time.process_time()
            try:
                return network(*args, **kwargs)
            finally:
                self.wall += time.perf_counter() - started
                self.cpu += time.process_time() - cpu
                self.calls += 1

        return call


class StandInReleaseModel:
    """A ``ReleaseModel`` whose network costs nothing: the camera conditions are built as for the network, and the
    clip's cache renders come back as its keyframes."""

    guided = False
    size_multiple = 16

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.config = ReleaseConfig(variant="memory-dmd", base_model="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
                                    controlnet=release_controlnet(True), scale_map=BUCKETS_480P,
                                    dmd=DMDSchedule(250.0, 1000.0, 5.0, 4))

    def generate(self, clip: KeyframeClip, prompt_embeds: Tensor, image_embeds: Tensor,
                 negative_prompt_embeds: Tensor | None = None, seed: int = 0) -> Tensor:
        camera_conditions(clip, self.device)
        return clip.renders


def release_generator(settings: Settings, embeddings: Path) -> WorldStereoGenerator:
    """The ``worldstereo`` generator around the stand-in, with placeholder embeddings written to ``embeddings``."""
    save_file({PROMPT: torch.zeros(512, 8), IMAGE: torch.zeros(257, 8)}, str(embeddings))
    models = settings.models.model_copy(update={"prompt_embeds": embeddings})
    return WorldStereoGenerator(settings.model_copy(update={"models": models}),
                                model=StandInReleaseModel(settings.resolved_device()))


def tiny_depth_anything_3(device: torch.device | str, seed: int = 0) -> Callable:
    """``DepthAnything3Net`` (preset ``da3-small``) cut to :data:`DA3_BLOCKS` blocks and a :data:`DA3_HEAD` head,
    random weights, called as the reconstructor calls the real one."""
    from depth_anything_3.cfg import create_object, load_config
    from depth_anything_3.registry import MODEL_REGISTRY

    config = load_config(MODEL_REGISTRY["da3-small"])
    for key, value in DA3_HEAD.items():
        config.head[key] = value
    torch.manual_seed(seed)
    network = create_object(config)
    network.backbone.pretrained.blocks = network.backbone.pretrained.blocks[:DA3_BLOCKS]
    network.backbone.out_layers = list(range(DA3_BLOCKS - 4, DA3_BLOCKS))
    network = network.to(device).eval().requires_grad_(False)
    return lambda x, extrinsics, intrinsics: network(x, extrinsics, intrinsics, [], False, False)


def release_reconstructor(settings: Settings, clock: NetworkClock) -> DepthAnything3Reconstructor:
    """The ``depth-anything-3`` reconstructor around the tiny network, its calls timed by ``clock``."""
    device = settings.resolved_device()
    return DepthAnything3Reconstructor(settings, model=clock.timed(tiny_depth_anything_3(device)))
