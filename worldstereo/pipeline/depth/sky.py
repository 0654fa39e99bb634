"""Sky and other no-surface pixels of the input, marked +inf in its depth before the 3D cache is built.

With ``WORLDSTEREO_MODELS__SKY_SEGMENTER`` set, a transformers semantic segmenter whose labels include ``sky``
(e.g. ``nvidia/segformer-b*-finetuned-ade-512-512``: ``config.json``, ``model.safetensors``,
``preprocessor_config.json``) labels each pixel; sky is where ``sky`` wins the argmax. Without one, a heuristic:
sky is the far pixels (beyond ``memory.sky_depth_ratio`` x the median depth, or no surface at all) that
reach the top edge of the image through far pixels of their own column — the open sky above a scene.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from worldstereo.config import Settings
from worldstereo.errors import ConfigurationError
from worldstereo.pipeline.depth.monocular import resize_images, resize_maps
from worldstereo.pipeline.weights import CONFIG_NAME, PREPROCESSOR_NAME, WEIGHTS_NAME, WeightsSpec, load_pretrained, normalisation

SPEC = WeightsSpec("sky segmenter", "sky_segmenter", (CONFIG_NAME, WEIGHTS_NAME),
                   "nvidia/segformer-b0-finetuned-ade-512-512, or another ADE20K semantic segmenter")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SEGMENTER, HEURISTIC, OFF = "segmenter", "heuristic", "off"


def sky_mask(settings: Settings, rgb: Tensor, depth: Tensor) -> tuple[Tensor, str]:
    """Sky ``[H,W]`` (bool) of an image ``[h,w,3]`` in [0,1] whose depth is ``[H,W]``, and the method that found it."""
    method = settings.memory.sky
    if method == "auto":
        method = SEGMENTER if settings.models.sky_segmenter is not None else HEURISTIC
    if method == OFF:
        return torch.zeros(depth.shape, dtype=torch.bool, device=depth.device), OFF
    if method == HEURISTIC:
        return open_far_pixels(depth, settings.memory.sky_depth_ratio), HEURISTIC
    segmenter = load_segmenter(SPEC.directory(settings), settings.resolved_device())
    return segmenter(rgb, *depth.shape).to(depth.device), SEGMENTER


def open_far_pixels(depth: Tensor, ratio: float) -> Tensor:
    """Pixels of ``depth [H,W]`` beyond ``ratio x`` its median (or +inf) with only such pixels above them."""
    usable = torch.isfinite(depth) & (depth > 0)
    if not bool(usable.any()):
        return torch.zeros(depth.shape, dtype=torch.bool, device=depth.device)
    far = ~(depth <= ratio * depth[usable].median())  # +inf and NaN count as far, zero and below do not
    return far.to(torch.uint8).cumprod(dim=0).bool()


class SkySegmenter:
    """A semantic segmenter and the index of its ``sky`` label."""

    def __init__(self, path: Path, device: str) -> None:
        from transformers import AutoModelForSemanticSegmentation

        self.model = load_pretrained(SPEC, path, AutoModelForSemanticSegmentation).to(device)
        labels = {int(k): str(v).lower() for k, v in self.model.config.id2label.items()}
        sky = [index for index, label in labels.items() if label == "sky" or label.startswith("sky")]
        if not sky:
            raise ConfigurationError(f"{SPEC.setting}={path}: the segmenter has no 'sky' label ({SPEC.checkpoints})")
        self.sky, self.device = sky[0], device
        processor = SPEC.json(path, PREPROCESSOR_NAME)
        size = processor.get("size", {"height": 512, "width": 512})
        self.size = (size["height"], size["width"])
        self.mean, self.std = normalisation(processor, IMAGENET_MEAN, IMAGENET_STD)

    def logits(self, rgb: Tensor) -> Tensor:
        """Class logits ``[C,h',w']`` of an image ``[h,w,3]`` in [0,1] (the model's output grid)."""
        pixels = resize_images(rgb[None].to(self.device), *self.size, self.mean, self.std)
        with torch.inference_mode():
            return self.model(pixel_values=pixels).logits[0].float()

    def __call__(self, rgb: Tensor, height: int, width: int) -> Tensor:
        """Sky ``[height,width]``: where the ``sky`` logit, resized bilinearly, is the largest."""
        return resize_maps(self.logits(rgb), height, width).argmax(dim=0) == self.sky


@lru_cache(maxsize=2)
def load_segmenter(path: Path, device: str) -> SkySegmenter:
    """The segmenter under ``path`` on ``device``, loaded once per process."""
    return SkySegmenter(path, device)
