"""One path for every monocular depth model: perspective photos and equirectangular panoramas.

A backend implements ``predict``: metric z-depth of a batch of images, given their intrinsics when
they are known, else with intrinsics of its own choosing (its field-of-view head, a default). This
class supplies the rest:

- perspective: a camera file's intrinsics are given to the model and its pose kept; otherwise the
  camera has the backend's intrinsics and the identity pose;
- panorama: 12 icosahedron views at 90 deg with their known focal length, predicted in batches and
  merged into one equirectangular distance map (``panorama_merge``).

``DepthEstimate.info`` records the backend, where the intrinsics came from and the focal length.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from worldstereo.config import Settings
from worldstereo.errors import InvalidInputError
from worldstereo.geometry.camera import Camera
from worldstereo.inputs import SceneInput
from worldstereo.pipeline.backends import DepthEstimate, DepthEstimator
from worldstereo.pipeline.depth.panorama_merge import (
    equirect_to_views,
    icosahedron_cameras,
    merge_view_distances,
    view_size,
)

PANORAMA_BATCH = 4  # views per forward pass
MAX_ASPECT = 8.0  # long side / short side a perspective photo may have
CAMERA_FILE, PANORAMA_VIEWS = "camera-file", "icosahedron-views"


@dataclass(frozen=True)
class ViewDepth:
    """A model's answer for ``B`` images: z-depth ``[B,H,W]`` float64 (+inf where it finds no surface),
    the intrinsics ``[B,3,3]`` (pixels) it holds for, and where those came from."""

    depth: Tensor
    K: Tensor
    source: str


class MonocularDepth(DepthEstimator):
    """Base of the model depth backends; subclasses load a model in ``setup()`` and implement ``predict``."""

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        self.device = torch.device(self.settings.resolved_device())

    @abstractmethod
    def predict(self, images: Tensor, K: Tensor | None) -> ViewDepth:
        """Metric z-depth of ``[B,H,W,3]`` float images in [0,1] on ``self.device``; ``K [B,3,3]`` in pixels
        when the intrinsics are known (the depth must then hold for them)."""

    def estimate(self, scene: SceneInput) -> DepthEstimate:
        self.setup()
        if scene.kind == "panorama":
            return self._panorama(scene.rgb)
        check_aspect(scene.height, scene.width)
        known = None if scene.camera is None else scene.camera.K.to(self.device, torch.float64)
        view = self.predict(scene.rgb[None].to(self.device, torch.float32), known)
        depth = view.depth[0].to("cpu", torch.float64)
        if scene.camera is not None:
            return DepthEstimate(depth, scene.camera, self._info(scene.camera.K[0], scene.width, CAMERA_FILE))
        K = view.K.to("cpu", torch.float64)
        camera = Camera(K, torch.eye(4, dtype=torch.float64)[None], scene.height, scene.width)
        return DepthEstimate(depth, camera, self._info(K[0], scene.width, view.source))

    def _panorama(self, rgb: Tensor) -> DepthEstimate:
        """Distance ``[H,W]`` from the origin, merged from the 12 icosahedron views."""
        height, width = rgb.shape[:2]
        cameras = icosahedron_cameras(view_size(width), device=self.device)
        views = equirect_to_views(rgb.to(self.device, torch.float32), cameras)
        depth = torch.cat([
            self.predict(views[i : i + PANORAMA_BATCH], cameras.K[i : i + PANORAMA_BATCH]).depth
            for i in range(0, len(cameras), PANORAMA_BATCH)
        ]).to(self.device, torch.float64)
        ray_length = cameras.ray_directions().norm(dim=-1)  # z-depth -> distance along the ray
        merged = merge_view_distances(depth * ray_length, cameras, height, width)
        info = self._info(cameras.K[0], cameras.width, PANORAMA_VIEWS) | {"views": len(cameras)}
        return DepthEstimate(merged.distance.to("cpu", torch.float64), None, info)

    def _info(self, K: Tensor, width: int, source: str) -> dict:
        focal = float(K[0, 0])
        return {"backend": self.name, "intrinsics": source, "focal_px": focal,
                "fov_x_deg": math.degrees(2 * math.atan(width / (2 * focal)))}


def check_aspect(height: int, width: int) -> None:
    """A photo far from any camera's aspect (a strip) cannot be served by a depth model."""
    if max(height, width) / min(height, width) > MAX_ASPECT:
        raise InvalidInputError(
            f"image of {width}x{height} is a strip (aspect beyond {MAX_ASPECT:g}:1) that no depth model serves; "
            "crop it to an ordinary photo's aspect"
        )


def focal_from_fov(width: int, fov_deg: Tensor) -> Tensor:
    """f = 0.5 W / tan(fov / 2), the pinhole focal of a horizontal field of view."""
    return 0.5 * width / torch.tan(torch.deg2rad(fov_deg) / 2)


def centred_intrinsics(focal: Tensor, height: int, width: int) -> Tensor:
    """``[B,3,3]`` intrinsics with square pixels of focal ``focal [B]`` and the image centre as principal point."""
    K = torch.zeros(len(focal), 3, 3, dtype=torch.float64, device=focal.device)
    K[:, 0, 0] = K[:, 1, 1] = focal.to(torch.float64)
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = width / 2, height / 2, 1.0
    return K


def resize_images(images: Tensor, height: int, width: int, mean: Tensor, std: Tensor) -> Tensor:
    """``[B,H,W,3]`` in [0,1] to normalised ``[B,3,height,width]`` float32 model inputs (bilinear, antialiased)."""
    batch = images.permute(0, 3, 1, 2).to(torch.float32)
    if batch.shape[-2:] != (height, width):
        batch = torch.nn.functional.interpolate(batch, size=(height, width), mode="bilinear", antialias=True,
                                                align_corners=False)
    return (batch - mean.to(batch)[:, None, None]) / std.to(batch)[:, None, None]


def resize_maps(maps: Tensor, height: int, width: int) -> Tensor:
    """``[B,h,w]`` maps to ``[B,height,width]`` (bilinear)."""
    if maps.shape[-2:] == (height, width):
        return maps
    return torch.nn.functional.interpolate(maps[:, None], size=(height, width), mode="bilinear",
                                           align_corners=False)[:, 0]
