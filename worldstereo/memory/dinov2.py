"""DINOv2 image features from a local directory (transformers ``Dinov2Model``): the pooled CLS token.

Pre-processing follows the directory's ``preprocessor_config.json`` when present (else DINOv2's defaults):
bicubic resize of the shorter side, centre crop, ImageNet normalisation, done in torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from worldstereo.errors import ConfigurationError

SETTING = "WORLDSTEREO_MODELS__DINOV2"
_DEFAULTS = {"shortest_edge": 256, "crop": 224, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


class Dinov2Features:
    """Callable ``images [N,H,W,3] in [0,1] -> pooler_output [N,D]``."""

    def __init__(self, directory: Path, device: str = "cpu") -> None:
        from transformers import Dinov2Model

        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise ConfigurationError(f"{SETTING}={directory} holds no DINOv2 model (config.json + weights)")
        self.model = Dinov2Model.from_pretrained(str(directory)).to(device).eval()
        self.device = device
        config = directory / "preprocessor_config.json"
        meta = json.loads(config.read_text()) if config.is_file() else {}
        size, crop = meta.get("size", {}), meta.get("crop_size", {})
        self.shortest_edge = int(size.get("shortest_edge", _DEFAULTS["shortest_edge"]))
        self.crop = (int(crop.get("height", _DEFAULTS["crop"])), int(crop.get("width", _DEFAULTS["crop"])))
        self.mean = torch.tensor(meta.get("image_mean", _DEFAULTS["mean"]), device=device)[:, None, None]
        self.std = torch.tensor(meta.get("image_std", _DEFAULTS["std"]), device=device)[:, None, None]

    def preprocess(self, images: Tensor) -> Tensor:
        """``[N,3,crop_h,crop_w]`` normalised pixel values."""
        x = images.permute(0, 3, 1, 2).float().to(self.device)
        h, w = x.shape[-2:]
        scale = self.shortest_edge / min(h, w)
        size = (max(self.crop[0], round(h * scale)), max(self.crop[1], round(w * scale)))
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        top, left = (size[0] - self.crop[0]) // 2, (size[1] - self.crop[1]) // 2
        x = x[..., top : top + self.crop[0], left : left + self.crop[1]]
        return (x - self.mean) / self.std

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        return self.model(pixel_values=self.preprocess(images)).pooler_output.cpu()
