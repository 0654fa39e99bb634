"""Feed-forward reconstruction with WorldMirror 2.0 (HY-World 2.0's ``worldrecon``), aligned back to the world.

``WORLDSTEREO_MODELS__WORLDMIRROR_2`` names a directory laid out as::

    <dir>/hyworld2/worldrecon/pipeline.py   a checkout of github.com/Tencent-Hunyuan/HY-World-2.0 with its
                                            requirements installed (pip install -r <dir>/requirements.txt);
                                            <dir> is put on sys.path
    <dir>/ckpts/HY-WorldMirror-2.0/         the weights (model.safetensors + config.json or config.yaml), as
                                            written by ``huggingface-cli download tencent/HY-World-2.0
                                            --include 'HY-WorldMirror-2.0/*' --local-dir <dir>/ckpts``

The network is loaded by the checkout's own ``WorldMirrorPipeline.from_pretrained`` and called like the 1.0
model (same outputs, ``cond_flags = [pose, depth, rays]``), with the requested cameras as priors: poses relative
to the first camera, as the release's pipeline gives them, and the intrinsics. Frames are resized to a long side
of 952 (the release's ``target_size``), multiples of the 14-pixel patch; the alignment back to the world is the
1.0 adapter's.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from worldstereo.errors import ConfigurationError
from worldstereo.geometry.camera import Camera, rigid_inverse
from worldstereo.pipeline.reconstructors.worldmirror import (
    WorldMirrorModel,
    WorldMirrorReconstructor,
    import_from_checkout,
)

SETTING = "WORLDSTEREO_MODELS__WORLDMIRROR_2"
MODULE, CLASS = "hyworld2.worldrecon.pipeline", "WorldMirrorPipeline"
WEIGHTS_DIR, SUBFOLDER = "ckpts", "HY-WorldMirror-2.0"
TARGET_SIZE = 952


class WorldMirror2Reconstructor(WorldMirrorReconstructor):
    """WorldMirror 2.0 in the world frame of the request (see the 1.0 adapter for the outputs and the alignment)."""

    name = "worldmirror-2"
    default_resolution = TARGET_SIZE

    def setup(self) -> None:
        if self.model is None:
            self.model = load_worldmirror_2(self.settings.models.worldmirror_2, self.device)

    def pose_priors(self, cameras: Camera) -> Tensor:
        """Poses relative to the first camera: ``c2w[0]⁻¹ c2w``."""
        c2w = cameras.c2w
        return rigid_inverse(c2w[:1]) @ c2w


def load_worldmirror_2(path: Path | None, device: torch.device) -> WorldMirrorModel:
    """The WorldMirror 2.0 network from the checkout and weights under ``path`` (module docstring), on ``device``."""
    if path is None:
        raise ConfigurationError(
            f"reconstructor 'worldmirror-2' needs a local HY-World 2.0: set {SETTING} to a directory holding a "
            f"checkout of github.com/Tencent-Hunyuan/HY-World-2.0 and its weights in {WEIGHTS_DIR}/{SUBFOLDER}/ "
            "(model.safetensors, config.json or config.yaml); or use --reconstructor rendered-depth"
        )
    source = path / Path(*MODULE.split(".")).with_suffix(".py")
    if not source.is_file():
        raise ConfigurationError(f"{SETTING}={path}: no HY-World 2.0 checkout there (missing {source})")
    weights = path / WEIGHTS_DIR / SUBFOLDER
    if not (weights / "model.safetensors").is_file() or not any((weights / n).is_file() for n in ("config.json", "config.yaml")):
        raise ConfigurationError(
            f"{SETTING}={path}: missing model.safetensors or its config in {weights}; download them with "
            f"`huggingface-cli download tencent/HY-World-2.0 --include '{SUBFOLDER}/*' --local-dir {path / WEIGHTS_DIR}`"
        )
    pipeline_class = import_from_checkout(path, MODULE, CLASS, SETTING)
    model = pipeline_class.from_pretrained(str(path / WEIGHTS_DIR), subfolder=SUBFOLDER).model
    return model.to(device).eval().requires_grad_(False)
