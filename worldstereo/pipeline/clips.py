"""What one generated clip is built from and leaves behind: its poses among the planned ones, its SSM references,
and the frames it adds to the memory bank, under the paper's or the release's memory rules.

A trajectory is planned at ``trajectory.num_frames`` poses; the generator makes a clip of ``clip_frames(planned)``
frames at the poses ``linspace(0, planned - 1, clip)`` (release: 81 -> 0, 4, ..., 80). Every condition (GGM
render, Plücker rays, retrieval targets) and everything kept afterwards uses those poses only.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from worldstereo.config import Settings
from worldstereo.errors import InvalidInputError
from worldstereo.geometry.camera import Camera
from worldstereo.geometry.trajectory import keyframe_indices
from worldstereo.memory.bank import MemoryBank, released_bank_indices
from worldstereo.memory.cache import Cache3D
from worldstereo.memory.pointmap import pointmap_pairs
from worldstereo.memory.retrieval import retrieve_references, retrieve_released
from worldstereo.geometry.render import CacheRender
from worldstereo.pipeline.backends import References
from worldstereo.pipeline.timing import step

ClipFn = Callable[[int], int]


def clip_length(settings: Settings, planned: int) -> int:
    """Frames of a clip for a trajectory planned with ``planned`` poses: ``generation.clip_frames`` or all."""
    return min(planned, settings.generation.clip_frames or planned)


def clip_indices(planned: int, clip: int) -> Tensor:
    """Planned-pose indices of the clip's frames: ``linspace(0, planned - 1, clip)`` truncated to integers."""
    if not 1 <= clip <= planned:
        raise InvalidInputError(f"a clip of {clip} frames does not fit a trajectory of {planned} poses")
    return torch.linspace(0, planned - 1, clip, dtype=torch.float64).long()


def gather_references(settings: Settings, bank: MemoryBank, cache: Cache3D, cameras: Camera, planned: int,
                      xyz: CacheRender | None = None, pointmaps: bool = True) -> References:
    """SSM references of a clip under ``memory.rules``; ``planned`` sets the paper's target count ``planned / 4``.
    ``xyz``: the cache's world coordinates already rendered into ``cameras`` (reused for the target pointmaps);
    ``pointmaps=False`` leaves the pointmaps out (for generators that do not read them)."""
    memory = settings.memory
    with step("retrieval"):
        bank_indices, targets, scores, ref_index = _retrieve(settings, bank, cameras, planned)
        frames = [bank[int(i)] for i in bank_indices]
        reference_cameras = Camera.cat([f.camera.to(cameras.device, cameras.dtype) for f in frames])
    pairs = None
    if pointmaps:
        with step("pointmaps"):
            target_xyz = None if xyz is None else CacheRender(xyz.rgb[targets], xyz.depth[targets], xyz.mask[targets])
            pairs = pointmap_pairs(cache.points, cameras[targets], reference_cameras, radius=memory.splat_radius,
                                   target_xyz=target_xyz)
    return References(
        target_indices=targets,
        images=torch.stack([f.image for f in frames]),
        cameras=reference_cameras,
        scores=scores,
        bank_indices=bank_indices,
        target_pointmaps=pairs.target if pairs else None,
        reference_pointmaps=pairs.reference if pairs else None,
        ref_index=ref_index,
    )


def _retrieve(settings: Settings, bank: MemoryBank, cameras: Camera, planned: int):
    """Bank indices of the references, their target frames in the clip, scores and (release) reference slots."""
    memory = settings.memory
    if memory.rules != "release":
        count = min(len(cameras), max(1, planned // 4))
        retrieval = retrieve_references(cameras, bank, num_targets=count, max_references=memory.max_references,
                                        near=memory.frustum_near, far=memory.frustum_far)
        return retrieval.reference_indices, retrieval.target_indices, retrieval.scores, None
    retrieval = retrieve_released(cameras, bank, max_references=memory.max_references, near=memory.frustum_near,
                                  far=memory.frustum_far, encoder=_encoder(settings.models.dinov2, settings))
    bank_indices, slots = retrieval.first_chosen()
    return bank_indices, retrieval.target_indices[slots], retrieval.scores[slots], slots


def bank_frames(settings: Settings, num_frames: int) -> list[int]:
    """Clip frames that enter the memory bank: every keyframe (paper) or ``memory.bank_frames`` released indices."""
    if settings.memory.rules == "release":
        return released_bank_indices(num_frames, settings.memory.bank_frames)
    return keyframe_indices(num_frames, min(settings.trajectory.keyframes, num_frames)).tolist()


def _encoder(directory: Path | None, settings: Settings):
    return None if directory is None else _load_dinov2(str(directory), settings.resolved_device())


@lru_cache(maxsize=2)
def _load_dinov2(directory: str, device: str):
    from worldstereo.memory.dinov2 import Dinov2Features

    return Dinov2Features(Path(directory), device)
