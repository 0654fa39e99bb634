"""Metric depth and focal length with DepthPro (transformers' ``DepthProForDepthEstimation``), from local weights.

``WORLDSTEREO_MODELS__DEPTH_PRO`` names a directory in the layout of ``apple/DepthPro-hf``
(``config.json``, ``model.safetensors``, optionally ``preprocessor_config.json``). The network sees
the image resized to its square input (1536² for the released weights) normalised with mean = std =
0.5, and predicts a canonical inverse depth and, with its field-of-view head, the horizontal field of
view. Metric depth is ``f / (W · inverse)`` for the focal length ``f`` in pixels of the image's width
``W``: the camera file's when the input has one, else the head's ``f = 0.5 W / tan(fov / 2)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from worldstereo.config import Settings
from worldstereo.errors import ConfigurationError
from worldstereo.pipeline.backends import Resources
from worldstereo.pipeline.depth.monocular import (
    CAMERA_FILE,
    MonocularDepth,
    ViewDepth,
    centred_intrinsics,
    focal_from_fov,
    resize_images,
    resize_maps,
)
from worldstereo.pipeline.weights import (
    CONFIG_NAME,
    PREPROCESSOR_NAME,
    WEIGHTS_NAME,
    WeightsSpec,
    load_pretrained,
    normalisation,
)

SPEC = WeightsSpec("depth-pro", "depth_pro", (CONFIG_NAME, WEIGHTS_NAME),
                   "apple/DepthPro-hf, research-only licence")
MEAN = STD = (0.5, 0.5, 0.5)
INVERSE_RANGE = (1e-4, 1e4)  # canonical inverse depth is clamped to this, as transformers' post-processing does
MIN_FOV_DEG, MAX_FOV_DEG = 5.0, 170.0  # a field of view outside this is no pinhole camera's


class DepthProDepth(MonocularDepth):
    """DepthPro's metric depth; without known intrinsics, the focal length of its field-of-view head."""

    name = "depth-pro"
    resources = Resources(gpus=1.0, cpus=2.0, memory_gb=8.0)

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        self.model = None

    def setup(self) -> None:
        if self.model is None:
            self.model, self.size, self.mean, self.std = load_depth_pro(self.settings, self.device)

    def predict(self, images: Tensor, K: Tensor | None) -> ViewDepth:
        self.setup()
        height, width = images.shape[1:3]
        inverse, fov = self.infer(images)
        source = CAMERA_FILE if K is not None else self.name
        if K is None:
            K = centred_intrinsics(focal_from_fov(width, fov.clamp(MIN_FOV_DEG, MAX_FOV_DEG)), height, width)
        depth = K[:, 0, 0, None, None] / (width * resize_maps(inverse, height, width).clamp(*INVERSE_RANGE))
        return ViewDepth(depth, K, source)

    def focal(self, images: Tensor) -> Tensor:
        """Focal lengths ``[B]`` in pixels of ``[B,H,W,3]`` images from the field-of-view head."""
        self.setup()
        _, fov = self.infer(images)
        return focal_from_fov(images.shape[2], fov.clamp(MIN_FOV_DEG, MAX_FOV_DEG))

    def infer(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Canonical inverse depth ``[B,h,w]`` and horizontal field of view ``[B]`` (degrees), float64."""
        pixels = resize_images(images.to(self.device), *self.size, self.mean, self.std)
        with torch.inference_mode():
            output = self.model(pixel_values=pixels)
        if output.field_of_view is None:
            raise ConfigurationError(f"{SPEC.setting}: the checkpoint has no field-of-view head (use_fov_model)")
        return output.predicted_depth.to(torch.float64), output.field_of_view.reshape(-1).to(torch.float64)


def load_depth_pro(settings: Settings, device: torch.device):
    """The model, its square input size and its normalisation, from ``models.depth_pro``."""
    from transformers import DepthProForDepthEstimation

    path, config = SPEC.config(settings, ("depth_pro",))
    if not config.get("use_fov_model", False):
        raise ConfigurationError(f"{SPEC.setting}={path}: the checkpoint has no field-of-view head "
                                 f"(use_fov_model is false); use {SPEC.checkpoints.split(',')[0]}")
    model = load_pretrained(SPEC, path, DepthProForDepthEstimation)
    processor = SPEC.json(path, PREPROCESSOR_NAME)
    side = round(model.config.patch_size / min(model.config.scaled_images_ratios))
    size = processor.get("size", {"height": side, "width": side})
    mean, std = normalisation(processor, MEAN, STD)
    return model.to(device), (size["height"], size["width"]), mean, std

