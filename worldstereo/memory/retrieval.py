"""SSM reference retrieval: the memory frame whose camera frustum overlaps a target's the most.

A frustum is the 8 points at z-depth ``near`` and ``far`` through the four image corners. The score
of a (target, memory) pair is the IoU of the two frusta's world axis-aligned boxes times
``clip(exp(5 (90 - theta) / 180), 0, 1)`` with ``theta`` the angle in degrees between the optical
axes, so pairs turned away by more than 90 degrees are damped. Each sampled target takes its argmax.

Two rule sets. ``retrieve_references`` (paper): ``F = N/4`` sampled targets, frusta at z-depths, a larger set of
distinct references cut to those with the highest summed score. ``retrieve_released`` (the release): one
target per clip frame 1..20, frusta at distances along the corner rays, a larger set reduced by quality-aware
furthest-point sampling (``worldstereo.memory.selection``) and every target re-assigned among the kept ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from worldstereo.errors import InvalidInputError
from worldstereo.geometry.camera import Camera
from worldstereo.geometry.trajectory import keyframe_indices
from worldstereo.memory.bank import MemoryBank
from worldstereo.memory.selection import ImageFeatures, select_references

RELEASED_CLIP = 21  # the released model's clip: targets are its frames 1..20


@dataclass(frozen=True)
class Retrieval:
    """References for the sampled targets; a score of 0 means no memory frame overlaps that target."""

    target_indices: Tensor
    reference_indices: Tensor
    scores: Tensor
    score_matrix: Tensor

    @property
    def distinct_references(self) -> Tensor:
        return torch.unique(self.reference_indices)

    def first_chosen(self) -> tuple[Tensor, Tensor]:
        """Distinct references in order of first appearance, and the target slot (0-based) where each appears first."""
        distinct, inverse = torch.unique(self.reference_indices, return_inverse=True)
        slots = torch.arange(len(inverse), device=inverse.device)
        first = torch.full((len(distinct),), len(inverse), device=inverse.device).scatter_reduce(
            0, inverse, slots, reduce="amin")
        order = torch.argsort(first)
        return distinct[order], first[order]


def frustum_corners(cameras: Camera, near: float, far: float, along_rays: bool = False) -> Tensor:
    """World corners ``[N,8,3]``: the image corners at ``near`` (first 4) and ``far`` (last 4), as z-depths or,
    with ``along_rays``, as distances along the unit corner rays (the release)."""
    if not 0 < near < far:
        raise InvalidInputError(f"need 0 < near < far, got near={near}, far={far}")
    w, h = float(cameras.width), float(cameras.height)
    pixels = torch.tensor([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], dtype=cameras.dtype, device=cameras.device)
    rays = torch.einsum("nij,cj->nci", torch.linalg.inv(cameras.K), pixels)
    if along_rays:
        rays = torch.nn.functional.normalize(rays, dim=-1)
    local = torch.cat([rays * near, rays * far], dim=1)
    return torch.einsum("nij,ncj->nci", cameras.c2w[:, :3, :3], local) + cameras.centers[:, None]


def frustum_overlap_scores(
    targets: Camera, memory: Camera, near: float = 0.1, far: float = 10.0, along_rays: bool = False
) -> Tensor:
    """Scores ``[T,M]``: box IoU of the frusta times the optical-axis angle weight."""
    memory = memory.to(targets.device, targets.dtype)
    t_corners, m_corners = frustum_corners(targets, near, far, along_rays), frustum_corners(memory, near, far, along_rays)
    t_lo, t_hi = t_corners.amin(dim=1), t_corners.amax(dim=1)
    m_lo, m_hi = m_corners.amin(dim=1), m_corners.amax(dim=1)
    overlap = (torch.minimum(t_hi[:, None], m_hi[None]) - torch.maximum(t_lo[:, None], m_lo[None])).clamp(min=0)
    inter = overlap.prod(dim=-1)
    union = (t_hi - t_lo).prod(dim=-1)[:, None] + (m_hi - m_lo).prod(dim=-1)[None] - inter
    t_axis = torch.nn.functional.normalize(targets.forward, dim=-1)
    m_axis = torch.nn.functional.normalize(memory.forward.to(t_axis), dim=-1)
    theta = torch.rad2deg(torch.arccos((t_axis @ m_axis.T).clamp(-1.0, 1.0)))
    weight = torch.exp(5.0 * (90.0 - theta) / 180.0).clamp(0.0, 1.0)
    return inter / union * weight


def retrieve_references(
    target_cameras: Camera,
    bank: MemoryBank | Camera,
    *,
    num_targets: int | None = None,
    max_references: int = 8,
    near: float = 0.1,
    far: float = 10.0,
) -> Retrieval:
    """Sample ``F`` targets uniformly (default ``N // 4``, frame 0 first) and retrieve one reference each.

    When the per-target argmax picks more than ``max_references`` distinct frames, the frames with
    the highest score summed over all sampled targets are kept and every target is re-assigned to
    its best frame among them.
    """
    memory = bank.cameras() if isinstance(bank, MemoryBank) else bank
    if len(memory) == 0:
        raise InvalidInputError("cannot retrieve from an empty memory bank")
    if max_references < 1:
        raise InvalidInputError(f"max_references must be >= 1, got {max_references}")
    count = num_targets if num_targets is not None else max(1, len(target_cameras) // 4)
    targets = keyframe_indices(len(target_cameras), count).to(target_cameras.device)
    scores = frustum_overlap_scores(target_cameras[targets], memory, near, far)
    best = scores.argmax(dim=1)
    distinct = torch.unique(best)
    if len(distinct) > max_references:
        kept = distinct[scores[:, distinct].sum(dim=0).topk(max_references).indices]
        best = kept[scores[:, kept].argmax(dim=1)]
    return Retrieval(targets, best, scores.gather(1, best[:, None])[:, 0], scores)


def retrieve_released(
    target_cameras: Camera,
    bank: MemoryBank,
    *,
    max_references: int = 8,
    near: float = 0.1,
    far: float = 10.0,
    encoder: ImageFeatures | None = None,
) -> Retrieval:
    """One reference per target frame 1..20 of the clip (a longer clip: of its 21 uniform keyframes).

    When the 20 winners hold more than ``max_references`` distinct frames, ``max_references`` of the 20
    candidates (duplicates included) are kept by quality-aware furthest-point sampling on camera features
    (and ``encoder`` features), and every target is re-assigned to its best frame among them.
    """
    if len(bank) == 0:
        raise InvalidInputError("cannot retrieve from an empty memory bank")
    if max_references < 1 or len(target_cameras) < 2:
        raise InvalidInputError("need max_references >= 1 and a clip of at least two frames")
    count = min(len(target_cameras), RELEASED_CLIP)
    targets = keyframe_indices(len(target_cameras), count)[1:].to(target_cameras.device)
    memory = bank.cameras()
    scores = frustum_overlap_scores(target_cameras[targets], memory, near, far, along_rays=True)
    best = scores.argmax(dim=1)
    if len(torch.unique(best)) > max_references:
        candidates = best.tolist()
        images = [bank[i].image for i in candidates]
        picked = select_references(memory[best.cpu()], images, max_references, encoder)
        kept = torch.unique(best[picked.to(best.device)])
        best = kept[scores[:, kept].argmax(dim=1)]
    return Retrieval(targets, best, scores.gather(1, best[:, None])[:, 0], scores)
