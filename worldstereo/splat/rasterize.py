"""One call to render Gaussians at a camera: gsplat's CUDA kernels on CUDA, the torch rasterizer elsewhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from worldstereo.geometry.camera import Camera
from worldstereo.splat.gsplat_backend import rasterize_gsplat
from worldstereo.splat.raster_torch import rasterize_torch

Backend = Literal["auto", "gsplat", "torch"]


@dataclass
class SplatRender:
    """One camera's render: ``rgb [H,W,3]``, expected depth ``[H,W]`` (0 where nothing), ``alpha [H,W]`` and
    the rasterizer's ``info`` (what the densification strategy reads)."""

    rgb: Tensor
    depth: Tensor
    alpha: Tensor
    info: dict


def resolve_backend(backend: Backend, device: torch.device | str) -> str:
    """``auto``: gsplat on CUDA, torch elsewhere."""
    if backend == "auto":
        return "gsplat" if torch.device(device).type == "cuda" else "torch"
    return backend


def render(params: dict[str, Tensor], camera: Camera, sh_degree: int, background: Tensor | None = None,
           backend: Backend = "auto") -> SplatRender:
    """Render the Gaussians ``params`` at the single camera ``camera``."""
    device = params["means"].device
    viewmat = camera.w2c[0].to(device, torch.float32)
    K = camera.K[0].to(device, torch.float32)
    raster = rasterize_gsplat if resolve_backend(backend, device) == "gsplat" else rasterize_torch
    rgb, depth_sum, alpha, info = raster(params, viewmat, K, camera.width, camera.height, sh_degree, background)
    depth = torch.where(alpha > 1e-4, depth_sum / alpha.clamp_min(1e-4), torch.zeros_like(depth_sum))
    return SplatRender(rgb, depth, alpha, info)
