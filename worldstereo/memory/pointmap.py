"""SSM pointmaps: the 3D cache's world XYZ rendered into a target and its reference, colourised as RGB.

Both maps of a pair share one normalisation, ``rgb = 0.5 + (xyz - centre) / extent`` with
``centre`` the middle of the pair's bounding box and ``extent`` its largest side, so a world point
has the same colour in the target and the reference map (the 3D correspondence) and every covered
pixel lies in ``[0, 1]``. Holes are black.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from worldstereo.errors import InvalidInputError
from worldstereo.geometry.camera import Camera
from worldstereo.geometry.render import render_points


class PointmapPair(NamedTuple):
    """Colourised pointmaps ``[...,H,W,3]`` and where the cache covers them ``[...,H,W]`` (True: rendered)."""

    target: Tensor
    reference: Tensor
    target_valid: Tensor
    reference_valid: Tensor


def pointmap_pairs(points: Tensor, targets: Camera, references: Camera, **render_kwargs: Any) -> PointmapPair:
    """Pointmaps of ``F`` (target, reference) pairs, ``[F,H,W,3]`` each; ``render_kwargs`` go to ``render_points``."""
    if len(targets) != len(references):
        raise InvalidInputError(f"{len(targets)} targets but {len(references)} references")
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise InvalidInputError(f"cache points must be a non-empty [P,3], got {tuple(points.shape)}")
    target = render_points(points, points, targets, **render_kwargs)
    reference = render_points(points, points, references, **render_kwargs)
    (t_lo, t_hi), (r_lo, r_hi) = _bounds(target.rgb, target.covered), _bounds(reference.rgb, reference.covered)
    lo, hi = torch.minimum(t_lo, r_lo), torch.maximum(t_hi, r_hi)
    centre = (lo + hi) / 2
    extent = (hi - lo).amax(dim=-1).clamp(min=torch.finfo(hi.dtype).tiny)

    def colourise(xyz: Tensor, covered: Tensor) -> Tensor:  # same affine map for both maps of a pair
        rgb = 0.5 + (xyz - centre[:, None, None]) / extent[:, None, None, None]
        return torch.where(covered[..., None], rgb.clamp(0.0, 1.0), torch.zeros_like(rgb))

    return PointmapPair(
        colourise(target.rgb, target.covered),
        colourise(reference.rgb, reference.covered),
        target.covered,
        reference.covered,
    )


def pointmap_pair(points: Tensor, target: Camera, reference: Camera, **render_kwargs: Any) -> PointmapPair:
    """Pointmaps ``[H,W,3]`` of one target camera and one reference camera."""
    if len(target) != 1 or len(reference) != 1:
        raise InvalidInputError("pointmap_pair takes one target and one reference camera")
    return PointmapPair(*(t[0] for t in pointmap_pairs(points, target, reference, **render_kwargs)))


def _bounds(xyz: Tensor, covered: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image min and max ``[F,3]`` over covered pixels (``+inf`` / ``-inf`` where none)."""
    covered = covered[..., None]
    lo = torch.where(covered, xyz, torch.full_like(xyz, torch.inf)).amin(dim=(1, 2))
    hi = torch.where(covered, xyz, torch.full_like(xyz, -torch.inf)).amax(dim=(1, 2))
    return lo, hi
