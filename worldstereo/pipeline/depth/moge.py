"""Depth initialisation with MoGe (github.com/microsoft/MoGe), loaded from local weights.

Install MoGe from a local checkout (``pip install -e /path/to/MoGe``) and point
``WORLDSTEREO_MODELS__MOGE`` at its checkpoint: ``model.pt`` or a directory holding it. MoGe-2
checkpoints (``moge.model.v2``) predict metric geometry; MoGe-1 checkpoints (``moge.model.v1``)
predict it up to an unknown scale, so their depth needs a known scale (a depth sidecar, or an
alignment downstream) before it can serve as a metric 3D cache. The version is read from the
checkpoint's model configuration.

Perspective inputs give z-depth and the camera; panoramas are split into 12 icosahedron views,
predicted view by view and merged into one distance map (``panorama_merge``).
"""

from __future__ import annotations

import math
import pickle
from importlib import import_module
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from worldstereo.config import Settings
from worldstereo.errors import ConfigurationError
from worldstereo.geometry.camera import Camera
from worldstereo.inputs import SceneInput
from worldstereo.pipeline.backends import DepthEstimate, DepthEstimator, Resources
from worldstereo.pipeline.depth.panorama_merge import (
    ICOSAHEDRON_FOV_DEG,
    equirect_to_views,
    icosahedron_cameras,
    merge_view_distances,
    view_size,
)

SETTING = "WORLDSTEREO_MODELS__MOGE"
CHECKPOINT_NAME = "model.pt"
INSTALL_HINT = "install MoGe from a local checkout of github.com/microsoft/MoGe with `pip install -e /path/to/MoGe`"
PANORAMA_BATCH = 4  # views per forward pass


class MoGeInference(Protocol):
    """The part of ``moge.model.v{1,2}.MoGeModel`` this backend calls.

    ``infer(image [B,3,H,W] in [0,1], fov_x=degrees or None, apply_mask=True)`` returns at least
    ``depth [B,H,W]`` (+inf where the predicted mask finds no surface) and ``intrinsics [B,3,3]``
    normalised by the image size (``fx/W, fy/H, cx/W, cy/H``).
    """

    def infer(self, image: Tensor, *, fov_x: float | None = None, apply_mask: bool = True) -> dict[str, Tensor]: ...


class MoGeDepth(DepthEstimator):
    """MoGe depth of a perspective image or an equirectangular panorama; results come back on the CPU in float64.

    ``model`` injects an already loaded model following ``MoGeInference``; otherwise ``setup()`` loads one.
    """

    name = "moge"
    resources = Resources(gpus=1.0, cpus=2.0, memory_gb=8.0)

    def __init__(self, settings: Settings | None = None, *, model: MoGeInference | None = None) -> None:
        super().__init__(settings)
        self.model = model
        self.device = torch.device(self.settings.resolved_device())

    def setup(self) -> None:
        if self.model is None:
            self.model = load_moge(self.settings.models.moge, self.device)

    def estimate(self, scene: SceneInput) -> DepthEstimate:
        self.setup()
        if scene.kind == "panorama":
            return DepthEstimate(self._panorama_distance(scene.rgb).to("cpu", torch.float64), None)
        return self._perspective(scene)

    def _perspective(self, scene: SceneInput) -> DepthEstimate:
        """Z-depth and camera; a camera file's intrinsics and pose are kept and its field of view is given to MoGe."""
        height, width = scene.height, scene.width
        fov_x = None if scene.camera is None else _fov_x_deg(scene.camera)
        depth, normalised = (x.cpu() for x in self._infer(scene.rgb[None], fov_x))
        if scene.camera is not None:
            return DepthEstimate(depth[0], scene.camera)
        K = normalised * torch.tensor([[width], [height], [1.0]], dtype=torch.float64)  # pixels, centres at i + 0.5
        return DepthEstimate(depth[0], Camera(K, torch.eye(4, dtype=torch.float64)[None], height, width))

    def _panorama_distance(self, rgb: Tensor) -> Tensor:
        """Distance ``[H,W]`` from the origin, merged from the 12 icosahedron views."""
        height, width = rgb.shape[:2]
        cameras = icosahedron_cameras(view_size(width), device=self.device)
        views = equirect_to_views(rgb.to(self.device, torch.float32), cameras)
        batches = views.split(PANORAMA_BATCH)
        depth = torch.cat([self._infer(batch, ICOSAHEDRON_FOV_DEG)[0] for batch in batches])
        ray_length = cameras.ray_directions().norm(dim=-1)  # z-depth -> distance along the ray
        return merge_view_distances(depth * ray_length, cameras, height, width).distance

    def _infer(self, images: Tensor, fov_x: float | None) -> tuple[Tensor, Tensor]:
        """Float64 z-depth ``[B,H,W]`` (+inf where MoGe finds no surface) and normalised intrinsics ``[B,3,3]``
        of ``[B,H,W,3]`` images, on the model's device."""
        batch = images.permute(0, 3, 1, 2).to(self.device, torch.float32)
        with torch.inference_mode():
            output = self.model.infer(batch, fov_x=fov_x, apply_mask=True)
        depth = output["depth"].to(self.device, torch.float64)
        valid = torch.isfinite(depth) & (depth > 0)
        return torch.where(valid, depth, math.inf), output["intrinsics"].to(self.device, torch.float64)


def _fov_x_deg(camera: Camera) -> float:
    return math.degrees(2 * math.atan(camera.width / (2 * float(camera.K[0, 0, 0]))))


def load_moge(path: Path | None, device: torch.device) -> MoGeInference:
    """The MoGe model of the checkpoint at ``path`` (``model.pt`` or a directory holding it), ready on ``device``."""
    if path is None:
        raise ConfigurationError(
            f"depth backend 'moge' needs local MoGe weights: set {SETTING} to a MoGe checkpoint "
            f"({CHECKPOINT_NAME} or a directory holding it) and {INSTALL_HINT}"
        )
    checkpoint = path / CHECKPOINT_NAME if path.is_dir() else path
    if not checkpoint.is_file():
        raise ConfigurationError(f"{SETTING}={path}: no MoGe checkpoint at {checkpoint}")
    try:
        config = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["model_config"]
    except (OSError, RuntimeError, KeyError, TypeError, pickle.UnpicklingError) as error:
        raise ConfigurationError(f"{SETTING}={path}: {checkpoint} is not a MoGe checkpoint ({error})") from None
    version = "v2" if "neck" in config else "v1"  # MoGe-2 configurations have a shared neck
    try:
        model_class = import_module(f"moge.model.{version}").MoGeModel
    except ImportError as error:
        raise ConfigurationError(f"the MoGe package is not importable ({error}); {INSTALL_HINT}") from None
    model = model_class.from_pretrained(checkpoint).to(device).eval()
    return model.requires_grad_(False)
