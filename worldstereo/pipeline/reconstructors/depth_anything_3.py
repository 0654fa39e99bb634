"""Multi-view reconstruction with Depth Anything 3 (``depth_anything_3.model.da3.DepthAnything3Net``).

``WORLDSTEREO_MODELS__DEPTH_ANYTHING_3`` names a directory in the layout of ``depth-anything/DA3-SMALL``
(``config.json`` with the package preset in ``model_name``, ``model.safetensors`` of the hub wrapper,
whose tensors are the network's under ``model.``). The network is built from the package's preset and
called directly (its high-level ``api`` module imports video and image packages this project does not install).

The generated frames (ImageNet-normalised, long side at most ``DEFAULT_RESOLUTION``, sides multiples of
the 14-pixel patch) go in with the requested cameras as priors: w2c extrinsics relative to frame 0 and
scaled by the median camera distance, as DA3's own API normalises them, and intrinsics in pixels of the
model input. DA3 answers depth, a confidence, and w2c cameras in a frame of its own. The similarity
taking that frame to the world is fitted to the cameras (``fit_cameras``): the rotation to the camera
orientations, scale and translation to the camera centres, or, when the centres do not spread (a camera
turning on the spot), the scale to the given first frame's known depth. Points are the predicted depth
back-projected through the aligned predicted cameras, kept where confident.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from worldstereo.config import Settings
from worldstereo.errors import ConfigurationError, InvalidInputError
from worldstereo.geometry.align import Sim3
from worldstereo.geometry.camera import Camera, rigid_inverse
from worldstereo.geometry.resample import resample_nearest
from worldstereo.pipeline.backends import (
    GeneratedVideo,
    GenerationRequest,
    Reconstruction,
    Reconstructor,
    Resources,
)
from worldstereo.pipeline.reconstructors.worldmirror import confident, model_input_size
from worldstereo.pipeline.weights import CONFIG_NAME, LOAD_ERRORS, WEIGHTS_NAME, WeightsSpec, load_failure

SPEC = WeightsSpec("depth-anything-3", "depth_anything_3", (CONFIG_NAME, WEIGHTS_NAME),
                   "depth-anything/DA3-SMALL or DA3-BASE (apache-2.0), DA3-LARGE (CC-BY-NC-4.0)")
INSTALL_HINT = "install it with `pip install --no-deps depth-anything-3==0.1.1` (scripts/setup.sh does)"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DEFAULT_RESOLUTION = 504  # DA3's processing resolution (long side)
MIN_CENTRE_SPREAD = 1e-3  # x the first frame's median depth: below it the centres cannot fix the scale


class DepthAnything3Network(Protocol):
    """``DepthAnything3Net.forward(x [B,N,3,H,W], extrinsics [B,N,4,4] w2c, intrinsics [B,N,3,3])``: a mapping
    with ``depth [B,N,H,W]``, ``depth_conf [B,N,H,W]``, ``extrinsics [B,N,3,4]`` (w2c), ``intrinsics [B,N,3,3]``."""

    def __call__(self, x: Tensor, extrinsics: Tensor | None, intrinsics: Tensor | None) -> dict: ...


@dataclass(frozen=True)
class DA3Prediction:
    """DA3's output for one video in its own frame: z-depth ``[N,h,w]``, confidence ``[N,h,w]``, cameras."""

    depth: Tensor
    confidence: Tensor
    cameras: Camera


class DepthAnything3Reconstructor(Reconstructor):
    """Depth, cameras and confident points of a generated video from DA3, in the world frame of the request.

    ``model`` injects an already loaded network following ``DepthAnything3Network``."""

    name = "depth-anything-3"
    resources = Resources(gpus=1.0, cpus=4.0, memory_gb=16.0)

    def __init__(self, settings: Settings | None = None, *, model: DepthAnything3Network | None = None,
                 resolution: int = DEFAULT_RESOLUTION) -> None:
        super().__init__(settings)
        self.model = model
        self.resolution = resolution
        self.device = torch.device(self.settings.resolved_device())

    def setup(self) -> None:
        if self.model is None:
            self.model = load_depth_anything_3(self.settings, self.device)

    def reconstruct(self, video: GeneratedVideo, request: GenerationRequest) -> Reconstruction:
        self.setup()
        count, height, width = video.frames.shape[:3]
        if len(request.cameras) != count:
            raise InvalidInputError(f"{count} frames for {len(request.cameras)} requested cameras")
        size = model_input_size(height, width, min(self.resolution, max(height, width)))
        cameras = request.cameras.resized(*size).to(dtype=torch.float64)
        images = F.interpolate(video.frames.permute(0, 3, 1, 2).float(), size=size, mode="bilinear",
                               antialias=True, align_corners=False).clamp(0, 1)
        prediction = self.predict(images, cameras)
        anchor = resample_nearest(request.ggm.depth[0].to(torch.float64), request.cameras[0], cameras[0])
        sim = fit_cameras(prediction, cameras, anchor)
        aligned = Camera(prediction.cameras.K, sim.apply_c2w(prediction.cameras.c2w), *size)
        valid = confident(prediction.depth[..., None], prediction.confidence) & (prediction.depth > 0)
        depth = torch.where(valid, prediction.depth * sim.scale, 0.0)  # in the world's units
        points = aligned.backproject(depth)
        return Reconstruction(
            points=points.to(torch.float32),
            colors=images.permute(0, 2, 3, 1).to(request.cameras.device),
            valid=valid,
            cameras=aligned.to(dtype=request.cameras.dtype),
            frame="world",
            extras={"sim3": sim, "depth": depth},
        )

    def predict(self, images: Tensor, cameras: Camera) -> DA3Prediction:
        """DA3 on ``[N,3,h,w]`` images in [0,1] with ``cameras`` (at that size) as priors; results on the CPU."""
        mean = torch.tensor(IMAGENET_MEAN, device=self.device)[:, None, None]
        std = torch.tensor(IMAGENET_STD, device=self.device)[:, None, None]
        x = ((images.to(self.device, torch.float32) - mean) / std)[None]
        w2c = normalised_priors(cameras.w2c).to(self.device, torch.float32)[None]
        K = cameras.K.to(self.device, torch.float32)[None]
        bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            output = self.model(x, w2c, K)
        take = lambda key: output[key][0].to("cpu", torch.float64)  # noqa: E731
        w2c = torch.eye(4, dtype=torch.float64).repeat(len(images), 1, 1)
        w2c[:, :3] = take("extrinsics")
        predicted = Camera(take("intrinsics"), rigid_inverse(w2c), *images.shape[-2:])
        return DA3Prediction(take("depth"), take("depth_conf"), predicted)


def normalised_priors(w2c: Tensor) -> Tensor:
    """Pose priors as DA3's API gives them: relative to frame 0, translations over the median camera distance."""
    relative = w2c @ rigid_inverse(w2c[:1])
    distance = rigid_inverse(relative)[:, :3, 3].norm(dim=-1).median().clamp_min(0.1)
    relative[:, :3, 3] /= distance
    return relative


def fit_cameras(prediction: DA3Prediction, cameras: Camera, anchor_depth: Tensor) -> Sim3:
    """The similarity ``x -> s R x + t`` taking DA3's frame to the world of ``cameras``.

    ``R`` is the rotation closest to ``Σ_i R_i^world (R_i^pred)^T`` (chordal mean of the per-frame rotations);
    ``s`` and ``t`` minimise ``Σ_i |c_i^world - (s R c_i^pred + t)|²`` over the camera centres, unless they
    spread less than ``MIN_CENTRE_SPREAD`` of the scene depth: then ``s`` is the median ratio of frame 0's
    known depth ``anchor_depth [h,w]`` (0/inf unknown) to its predicted depth.
    """
    predicted, world = prediction.cameras.c2w.to(torch.float64), cameras.c2w.to(torch.float64)
    U, _, Vh = torch.linalg.svd((world[:, :3, :3] @ predicted[:, :3, :3].transpose(1, 2)).sum(dim=0))
    R = U @ torch.diag(torch.tensor([1.0, 1.0, torch.linalg.det(U @ Vh).sign()], dtype=torch.float64)) @ Vh
    c_pred, c_world = predicted[:, :3, 3], world[:, :3, 3]
    d_pred, d_world = (c_pred - c_pred.mean(0)) @ R.T, c_world - c_world.mean(0)
    known = torch.isfinite(anchor_depth) & (anchor_depth > 0) & (prediction.depth[0] > 0)
    scene_depth = float(anchor_depth[known].median()) if bool(known.any()) else 0.0
    if float(d_world.norm(dim=-1).max()) > MIN_CENTRE_SPREAD * scene_depth and float(d_pred.square().sum()) > 0:
        scale = (d_world * d_pred).sum() / d_pred.square().sum()  # least squares over the centred centres
    elif bool(known.any()):
        scale = (anchor_depth[known] / prediction.depth[0][known]).median()
    else:
        raise InvalidInputError("cannot scale the DA3 reconstruction: the cameras do not move and frame 0 has no "
                                "known depth")
    t = c_world.mean(0) - scale * R @ c_pred.mean(0)
    return Sim3(scale.to(torch.float64), R, t)


def load_depth_anything_3(settings: Settings, device: torch.device) -> DepthAnything3Network:
    """``DepthAnything3Net`` of the checkpoint under ``models.depth_anything_3``, on ``device``."""
    path, config = SPEC.config(settings)
    try:
        from depth_anything_3.cfg import create_object, load_config
        from depth_anything_3.registry import MODEL_REGISTRY
    except ImportError as error:
        raise ConfigurationError(f"the depth-anything-3 package is not importable ({error}); {INSTALL_HINT}") from None
    preset = config.get("model_name")
    if preset not in MODEL_REGISTRY:
        raise ConfigurationError(
            f"{SPEC.setting}={path}: {CONFIG_NAME} names model_name {preset!r}, not a preset of depth-anything-3 "
            f"({', '.join(MODEL_REGISTRY)}); expected {SPEC.checkpoints}"
        )
    from safetensors.torch import load_model

    wrapper = hub_wrapper(create_object(load_config(MODEL_REGISTRY[preset])))
    try:
        load_model(wrapper, path / WEIGHTS_NAME, strict=True)  # tensors shared in the network are stored once
    except LOAD_ERRORS as error:
        raise load_failure(SPEC, path, error) from None
    return _Forward(wrapper.model.to(device).eval().requires_grad_(False))


def hub_wrapper(network: torch.nn.Module) -> torch.nn.Module:
    """A module holding ``network`` under ``model``, as the hub checkpoint's wrapper class does."""
    wrapper = torch.nn.Module()
    wrapper.model = network
    return wrapper


class _Forward:
    """The network called with priors only (no exported features, no Gaussians, camera-decoder poses)."""

    def __init__(self, network: torch.nn.Module) -> None:
        self.network = network

    def __call__(self, x: Tensor, extrinsics: Tensor | None, intrinsics: Tensor | None) -> dict:
        return self.network(x, extrinsics, intrinsics, [], False, False)
