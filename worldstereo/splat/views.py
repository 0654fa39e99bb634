"""What the splats are trained and scored on: a scene's memory-bank frames at their cameras, resized, with
the z-depth of the fused cloud rendered at each."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from worldstereo.geometry.camera import Camera
from worldstereo.memory.bank import MemoryBank
from worldstereo.memory.cache import Cache3D


@dataclass(frozen=True)
class View:
    """One supervising frame: ``image [H,W,3]`` in [0, 1], ``depth [H,W]`` (0: unknown), one ``camera``."""

    name: str
    image: Tensor
    depth: Tensor
    camera: Camera


def scene_views(bank: MemoryBank, cache: Cache3D, scale: float, device: torch.device | str = "cpu") -> list[View]:
    """Every bank frame at ``scale`` of its size, with the cloud's depth at its camera."""
    views = []
    for frame in bank.frames:
        image = frame.image.float()
        height, width = max(11, round(image.shape[0] * scale)), max(11, round(image.shape[1] * scale))
        camera = frame.camera.to(dtype=torch.float64).resized(height, width)
        if (height, width) != image.shape[:2]:
            image = F.interpolate(image.permute(2, 0, 1)[None], (height, width), mode="area")[0].permute(1, 2, 0)
        depth = cache.render(camera.to(cache.points.device, torch.float32)).depth[0]
        views.append(View(f"{frame.source}_{frame.index:03d}", image.to(device), depth.to(device, torch.float32),
                          camera.to(device)))
    return views


def split_views(views: list[View], stride: int) -> tuple[list[View], list[View]]:
    """(training, held-out): every ``stride``-th frame after the first is held out (``stride`` 0: none)."""
    held = [stride > 0 and i % stride == stride - 1 for i in range(len(views))]
    return [v for v, h in zip(views, held) if not h], [v for v, h in zip(views, held) if h]
