"""Metric depth with the Depth-Anything-V2 metric head (transformers' ``DepthAnythingForDepthEstimation``).

``WORLDSTEREO_MODELS__DEPTH_ANYTHING_METRIC`` names a directory in the layout of
``depth-anything/Depth-Anything-V2-Metric-{Indoor,Outdoor}-{Small,Base,Large}-hf`` (``config.json`` with
``depth_estimation_type: metric``, ``model.safetensors``, optionally ``preprocessor_config.json``). The
head predicts depth up to ``max_depth`` metres (the checkpoint's: 20 indoor, 80 outdoor; the
``max_depth`` setting overrides it). The network sees the image with its short side resized to 518
(a multiple of the 14-pixel patch, aspect kept), ImageNet-normalised.

The model takes no intrinsics, yet a 3D cache needs them: the camera file's, else DepthPro's
field-of-view head when ``WORLDSTEREO_MODELS__DEPTH_PRO`` is set, else ``default_fov_deg``. The scene
summary's ``init.depth.intrinsics`` says which (``camera-file``, ``depth-pro``, ``default-fov``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from worldstereo.config import Settings
from worldstereo.errors import ConfigurationError
from worldstereo.pipeline.backends import Resources
from worldstereo.pipeline.depth.depth_pro import DepthProDepth
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

SPEC = WeightsSpec("depth-anything-metric", "depth_anything_metric", (CONFIG_NAME, WEIGHTS_NAME),
                   "depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf or -Outdoor-, Small/Base/Large, apache-2.0")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SHORT_SIDE = 518
DEFAULT_FOV = "default-fov"


class DepthAnythingMetricDepth(MonocularDepth):
    """Depth-Anything-V2 metric depth; intrinsics from the camera file, DepthPro or the default field of view."""

    name = "depth-anything-metric"
    resources = Resources(gpus=1.0, cpus=2.0, memory_gb=6.0)

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        self.model = None
        self.focal_model = DepthProDepth(self.settings) if self.settings.models.depth_pro is not None else None

    def setup(self) -> None:
        if self.model is None:
            self.model, self.short_side, self.mean, self.std = load_depth_anything_metric(self.settings, self.device)

    def predict(self, images: Tensor, K: Tensor | None) -> ViewDepth:
        self.setup()
        height, width = images.shape[1:3]
        pixels = resize_images(images.to(self.device), *self.input_size(height, width), self.mean, self.std)
        with torch.inference_mode():
            depth = self.model(pixel_values=pixels).predicted_depth.to(torch.float64)
        depth = resize_maps(depth, height, width)
        depth = torch.where(depth > 0, depth, torch.inf)
        if K is not None:
            return ViewDepth(depth, K, CAMERA_FILE)
        if self.focal_model is not None:
            focal, source = self.focal_model.focal(images), self.focal_model.name
        else:
            fov = torch.full((len(images),), self.settings.default_fov_deg, dtype=torch.float64, device=self.device)
            focal, source = focal_from_fov(width, fov), DEFAULT_FOV
        return ViewDepth(depth, centred_intrinsics(focal, height, width), source)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """Short side ``short_side``, aspect kept, both sides multiples of the patch."""
        patch = self.model.config.patch_size
        scale = self.short_side / min(height, width)
        return max(patch, round(height * scale / patch) * patch), max(patch, round(width * scale / patch) * patch)


def load_depth_anything_metric(settings: Settings, device: torch.device):
    """The model (``max_depth`` applied), its short input side and its normalisation, from the settings."""
    from transformers import DepthAnythingForDepthEstimation

    path, config = SPEC.config(settings, ("depth_anything",))
    if config.get("depth_estimation_type") != "metric":
        raise ConfigurationError(
            f"{SPEC.setting}={path}: a relative-depth checkpoint (depth_estimation_type "
            f"{config.get('depth_estimation_type', 'relative')!r}); use a metric one: {SPEC.checkpoints}"
        )
    overrides = {} if settings.max_depth is None else {"max_depth": settings.max_depth}
    model = load_pretrained(SPEC, path, DepthAnythingForDepthEstimation, **overrides)
    processor = SPEC.json(path, PREPROCESSOR_NAME)
    short_side = min(processor.get("size", {}).get(k, SHORT_SIDE) for k in ("height", "width"))
    mean, std = normalisation(processor, IMAGENET_MEAN, IMAGENET_STD)
    return model.to(device), short_side, mean, std

