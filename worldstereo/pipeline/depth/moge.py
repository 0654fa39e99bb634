"""Depth initialisation with MoGe (github.com/microsoft/MoGe), loaded from local weights.

Install MoGe from a local checkout (``pip install -e /path/to/MoGe``; the test extra installs the identical
``dlr-moge`` repackaging) and point
``WORLDSTEREO_MODELS__MOGE`` at its checkpoint: ``model.pt`` or a directory holding it. MoGe-2
checkpoints (``moge.model.v2``) predict metric geometry; MoGe-1 checkpoints (``moge.model.v1``)
predict it up to an unknown scale, so their depth needs a known scale (a depth sidecar, or an
alignment downstream) before it can serve as a metric 3D cache. The version is read from the
checkpoint's model configuration.

Perspective inputs give z-depth and the camera; panoramas go through the shared icosahedron path
of ``monocular``.
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
from worldstereo.pipeline.backends import Resources
from worldstereo.pipeline.depth.monocular import CAMERA_FILE, MonocularDepth, ViewDepth

SETTING = "WORLDSTEREO_MODELS__MOGE"
CHECKPOINT_NAME = "model.pt"
INSTALL_HINT = "install MoGe from a local checkout of github.com/microsoft/MoGe with `pip install -e /path/to/MoGe`"


class MoGeInference(Protocol):
    """The part of ``moge.model.v{1,2}.MoGeModel`` this backend calls.

    ``infer(image [B,3,H,W] in [0,1], fov_x=degrees or None, apply_mask=True, use_fp16=on CUDA)`` returns at least
    ``depth [B,H,W]`` (+inf where the predicted mask finds no surface) and ``intrinsics [B,3,3]``
    normalised by the image size (``fx/W, fy/H, cx/W, cy/H``).
    """

    def infer(
        self, image: Tensor, *, fov_x: float | None = None, apply_mask: bool = True, use_fp16: bool = True
    ) -> dict[str, Tensor]: ...


class MoGeDepth(MonocularDepth):
    """MoGe depth of a perspective image or an equirectangular panorama (the shared ``MonocularDepth`` path).

    ``model`` injects an already loaded model following ``MoGeInference``; otherwise ``setup()`` loads one.
    """

    name = "moge"
    resources = Resources(gpus=1.0, cpus=2.0, memory_gb=8.0)

    def __init__(self, settings: Settings | None = None, *, model: MoGeInference | None = None) -> None:
        super().__init__(settings)
        self.model = model

    def setup(self) -> None:
        if self.model is None:
            self.model = load_moge(self.settings.models.moge, self.device)

    def predict(self, images: Tensor, K: Tensor | None) -> ViewDepth:
        """MoGe is given the horizontal field of view of known intrinsics; otherwise it estimates its own."""
        height, width = images.shape[1:3]
        fov_x = None if K is None else _fov_x_deg(float(K[0, 0, 0]), width)
        batch = images.permute(0, 3, 1, 2).to(self.device, torch.float32)
        with torch.inference_mode():
            output = self.model.infer(batch, fov_x=fov_x, apply_mask=True, use_fp16=self.device.type == "cuda")
        depth = output["depth"].to(self.device, torch.float64)
        depth = torch.where(torch.isfinite(depth) & (depth > 0), depth, math.inf)
        if K is not None:
            return ViewDepth(depth, K, CAMERA_FILE)
        size = torch.tensor([[width], [height], [1.0]], dtype=torch.float64, device=self.device)
        return ViewDepth(depth, output["intrinsics"].to(self.device, torch.float64) * size, self.name)


def _fov_x_deg(focal: float, width: int) -> float:
    return round(math.degrees(2 * math.atan(width / (2 * focal))), 9)  # 90.0, not 89.99999999999999


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
    try:
        model = model_class.from_pretrained(checkpoint)
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        raise ConfigurationError(f"{SETTING}={path}: {checkpoint} does not load into MoGe ({error})") from None
    return model.to(device).eval().requires_grad_(False)
