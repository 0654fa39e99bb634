"""Feed-forward reconstruction with WorldMirror (HunyuanWorld-Mirror), aligned back to the world by a Sim(3).

``WORLDSTEREO_MODELS__WORLDMIRROR`` names a directory laid out as::

    <dir>/src/models/models/worldmirror.py   a checkout of github.com/Tencent-Hunyuan/HunyuanWorld-Mirror
                                             with its requirements installed (pip install -r
                                             <dir>/requirements.txt); <dir> is put on sys.path
    <dir>/ckpts/config.json                  the weights, as written by ``huggingface-cli download
    <dir>/ckpts/model.safetensors            tencent/HunyuanWorld-Mirror --local-dir <dir>/ckpts``

The model is called as ``model(views=..., cond_flags=[pose, depth, rays])`` (the order its visual
transformer's ``_process_conditioning`` reads; the ``forward`` docstring's "[depth, rays, camera]" is
wrong) with ``views["img"]`` ``[1,S,3,h,w]`` in [0,1] and, as priors, the requested cameras:
``views["camera_poses"]`` (c2w, OpenCV) and ``views["camera_intrs"]`` (pixels, read as rays). It returns ``pts3d [1,S,h,w,3]``, ``pts3d_conf
[1,S,h,w]``, ``depth [1,S,h,w,1]``, ``camera_poses [1,S,4,4]`` and ``camera_intrs [1,S,3,3]`` in a
frame of its own at relative scale (it normalises the pose priors). Frames are resized so their long
side is ``resolution`` and both sides are multiples of the 14-pixel patch.

Alignment back to the world: a similarity fitted by ``robust_umeyama`` (LMedS, then refits on the
inliers) to two kinds of correspondences at once — the first frame's predicted points against the
world points of its known depth (the given image's depth, frame 0 of the GGM condition; the
first-frame anchor of the paper's evaluation), and every predicted camera centre against its
requested centre (the baseline of the path). The first kind alone fixes the similarity; the centres
tie the rest of the path to it, and outliers of either kind are rejected.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from worldstereo.config import Settings
from worldstereo.errors import ConfigurationError, InvalidInputError
from worldstereo.geometry.align import Sim3, robust_umeyama
from worldstereo.geometry.camera import Camera
from worldstereo.geometry.resample import resample_nearest
from worldstereo.pipeline.backends import (
    GeneratedVideo,
    GenerationRequest,
    Reconstruction,
    Reconstructor,
    Resources,
)

SETTING = "WORLDSTEREO_MODELS__WORLDMIRROR"
MODULE, CLASS = "src.models.models.worldmirror", "WorldMirror"
WEIGHTS_DIR, WEIGHT_FILES = "ckpts", ("config.json", "model.safetensors")
PATCH = 14
DEFAULT_RESOLUTION = 518  # the long side WorldMirror is trained at
COND_FLAGS = (1, 0, 1)  # priors given: [pose, depth, rays (intrinsics)], as _process_conditioning reads them
CONFIDENCE_PERCENTILE = 10.0  # per frame, the least confident points are dropped (as WorldMirror's demo does)
MAX_ANCHOR_POINTS = 4096
MIN_SPREAD = 1e-6  # second / first singular value of the centred world anchors; below it they are collinear


class WorldMirrorModel(Protocol):
    """``WorldMirror.forward`` as this adapter calls it."""

    def __call__(self, *, views: dict[str, Tensor], cond_flags: list[int]) -> dict[str, Tensor]: ...


@dataclass(frozen=True)
class WorldMirrorPrediction:
    """WorldMirror's output for one video, in its own frame at relative scale."""

    points: Tensor  # [N,h,w,3]
    confidence: Tensor  # [N,h,w]
    depth: Tensor  # [N,h,w] z-depth
    cameras: Camera  # predicted c2w (OpenCV) and intrinsics, N


class WorldMirrorReconstructor(Reconstructor):
    """Points and cameras of a generated video from WorldMirror, in the world frame of the request.

    ``model`` injects an already loaded model following ``WorldMirrorModel``; otherwise ``setup()``
    loads one. Outputs are at the model's input resolution, on the device of the requested cameras.
    """

    name = "worldmirror"
    resources = Resources(gpus=1.0, cpus=4.0, memory_gb=32.0)
    default_resolution = DEFAULT_RESOLUTION

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        model: WorldMirrorModel | None = None,
        resolution: int | None = None,
    ) -> None:
        super().__init__(settings)
        resolution = resolution or self.default_resolution
        if resolution <= 0 or resolution % PATCH:
            raise ConfigurationError(f"WorldMirror resolution must be a positive multiple of {PATCH}, got {resolution}")
        self.model = model
        self.resolution = resolution
        self.device = torch.device(self.settings.resolved_device())

    def setup(self) -> None:
        if self.model is None:
            self.model = load_worldmirror(self.settings.models.worldmirror, self.device)

    def reconstruct(self, video: GeneratedVideo, request: GenerationRequest) -> Reconstruction:
        self.setup()
        count, height, width = video.frames.shape[:3]
        if len(request.cameras) != count:
            raise InvalidInputError(f"{count} frames for {len(request.cameras)} requested cameras")
        size = model_input_size(height, width, self.resolution)
        cameras = request.cameras.resized(*size)
        images = F.interpolate(
            video.frames.permute(0, 3, 1, 2).float(), size=size, mode="bilinear", antialias=True, align_corners=False
        ).clamp(0, 1)
        prediction = self.predict(images, cameras)
        valid = confident(prediction.points, prediction.confidence)
        anchor_depth = resample_nearest(request.ggm.depth[0], request.cameras[0], cameras[0])
        sim, inliers = align_to_world(prediction, valid, cameras, anchor_depth, seed=request.seed)
        aligned = Camera(prediction.cameras.K, sim.apply_c2w(prediction.cameras.c2w), *size)
        return Reconstruction(
            points=sim.apply(prediction.points).to(torch.float32),
            colors=images.permute(0, 2, 3, 1).to(request.cameras.device),
            valid=valid,
            cameras=aligned.to(dtype=request.cameras.dtype),
            frame="world",
            extras={"relative": prediction, "sim3": sim, "align_inliers": int(inliers.sum())},
        )

    def predict(self, images: Tensor, cameras: Camera) -> WorldMirrorPrediction:
        """WorldMirror on ``[N,3,h,w]`` images with ``cameras`` as pose and intrinsics priors; results on the
        cameras' device."""
        views = {
            "img": images[None].to(self.device, torch.float32),
            "camera_poses": self.pose_priors(cameras)[None].to(self.device, torch.float32),
            "camera_intrs": cameras.K[None].to(self.device, torch.float32),
        }
        bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            output = self.model(views=views, cond_flags=list(COND_FLAGS))

        def take(key: str, dtype: torch.dtype = torch.float32) -> Tensor:
            return output[key][0].to(cameras.device, dtype)

        predicted = Camera(take("camera_intrs", torch.float64), take("camera_poses", torch.float64), *images.shape[-2:])
        return WorldMirrorPrediction(take("pts3d"), take("pts3d_conf"), take("depth")[..., 0], predicted)


    def pose_priors(self, cameras: Camera) -> Tensor:
        """The c2w ``[N,4,4]`` poses given as priors (the model normalises them itself)."""
        return cameras.c2w


def model_input_size(height: int, width: int, resolution: int = DEFAULT_RESOLUTION) -> tuple[int, int]:
    """``(h, w)`` with the long side ``resolution`` and both sides multiples of the patch, aspect kept to a patch."""
    scale = resolution / max(height, width)
    return max(PATCH, round(height * scale / PATCH) * PATCH), max(PATCH, round(width * scale / PATCH) * PATCH)


def confident(points: Tensor, confidence: Tensor) -> Tensor:
    """Finite points at or above their frame's ``CONFIDENCE_PERCENTILE`` of confidence, ``[N,h,w]``."""
    flat = confidence.flatten(1)
    rank = int(CONFIDENCE_PERCENTILE / 100 * (flat.shape[1] - 1)) + 1
    threshold = flat.kthvalue(rank, dim=1).values
    return torch.isfinite(points).all(dim=-1) & (confidence >= threshold[:, None, None])


def align_to_world(
    prediction: WorldMirrorPrediction, valid: Tensor, cameras: Camera, anchor_depth: Tensor, *, seed: int = 0
) -> tuple[Sim3, Tensor]:
    """The similarity taking WorldMirror's frame to the world, and the inlier mask of its correspondences.

    ``anchor_depth [h,w]`` is the known z-depth of frame 0 seen by ``cameras[0]`` (0 or inf unknown). The
    correspondences are frame 0's predicted points where both are known (at most ``MAX_ANCHOR_POINTS``,
    evenly spread) and the ``N`` camera centres; see the module docstring.
    """
    known = valid[0] & torch.isfinite(anchor_depth) & (anchor_depth > 0)
    pixels = known.flatten().nonzero()[:, 0]
    spread = torch.linspace(0, len(pixels) - 1, min(len(pixels), MAX_ANCHOR_POINTS), device=pixels.device)
    pixels = pixels[spread.round().long()]
    world = cameras[0].to(dtype=torch.float64).backproject(torch.where(known, anchor_depth, 0).to(torch.float64)[None])
    src = torch.cat([prediction.points[0].reshape(-1, 3)[pixels].to(torch.float64), prediction.cameras.centers])
    dst = torch.cat([world[0].reshape(-1, 3)[pixels], cameras.centers.to(torch.float64)])
    if len(dst) < 3 or not _spread(dst):
        raise InvalidInputError(
            "cannot align the WorldMirror reconstruction to the world: its correspondences (frame 0's known depth, "
            "none here, and the camera centres) are collinear"
        )
    return robust_umeyama(src, dst, seed=seed)


def _spread(points: Tensor) -> bool:
    """Whether points ``[P>=3,3]`` are not all on one line (a similarity needs that)."""
    singular = torch.linalg.svdvals(points - points.mean(dim=0))
    return float(singular[1]) > MIN_SPREAD * float(singular[0])


def load_worldmirror(path: Path | None, device: torch.device) -> WorldMirrorModel:
    """WorldMirror from the checkout and weights under ``path`` (layout in the module docstring), on ``device``."""
    if path is None:
        raise ConfigurationError(
            f"reconstructor 'worldmirror' needs a local HunyuanWorld-Mirror: set {SETTING} to a directory holding "
            f"a checkout of github.com/Tencent-Hunyuan/HunyuanWorld-Mirror and its weights in "
            f"{WEIGHTS_DIR}/ ({', '.join(WEIGHT_FILES)}); or use --reconstructor rendered-depth"
        )
    source = path / Path(*MODULE.split(".")).with_suffix(".py")
    if not source.is_file():
        raise ConfigurationError(f"{SETTING}={path}: no HunyuanWorld-Mirror checkout there (missing {source})")
    weights = path / WEIGHTS_DIR
    missing = [name for name in WEIGHT_FILES if not (weights / name).is_file()]
    if missing:
        raise ConfigurationError(
            f"{SETTING}={path}: missing {', '.join(missing)} in {weights}; download them with "
            f"`huggingface-cli download tencent/HunyuanWorld-Mirror --local-dir {weights}`"
        )
    model_class = import_from_checkout(path, MODULE, CLASS, SETTING)
    model = model_class.from_pretrained(str(weights)).to(device).eval()
    return model.requires_grad_(False)


def import_from_checkout(path: Path, module: str, attribute: str, setting: str):
    """``module.attribute`` imported from the checkout at ``path`` (put first on ``sys.path``)."""
    top = module.split(".")[0]
    package = sys.modules.get(top)
    if package is not None and str(path / top) not in list(getattr(package, "__path__", [])):
        raise ConfigurationError(f"cannot import {module}: another package named {top!r} is already imported ({package})")
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    try:
        return getattr(import_module(module), attribute)
    except ImportError as error:
        raise ConfigurationError(
            f"{setting}={path}: cannot import {module} ({error}); "
            f"install its requirements: pip install -r {path / 'requirements.txt'}"
        ) from None
