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
from worldstereo.geometry.render import CacheRender, render_points


class PointmapPair(NamedTuple):
    """Colourised pointmaps ``[...,H,W,3]`` and where the cache covers them ``[...,H,W]`` (True: rendered)."""

    target: Tensor
    reference: Tensor
    target_valid: Tensor
    reference_valid: Tensor


def pointmap_pairs(
    points: Tensor, targets: Camera, references: Camera, *, target_xyz: CacheRender | None = None,
    **render_kwargs: Any,
) -> PointmapPair:
    """Pointmaps of ``F`` (target, reference) pairs, ``[F,H,W,3]`` each; ``render_kwargs`` go to ``render_points``.

    ``target_xyz`` is the cache's XYZ already rendered into ``targets`` (e.g. in the same pass as the
    GGM condition); repeated reference cameras are rendered once.
    """
    if len(targets) != len(references):
        raise InvalidInputError(f"{len(targets)} targets but {len(references)} references")
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise InvalidInputError(f"cache points must be a non-empty [P,3], got {tuple(points.shape)}")
    if target_xyz is not None and target_xyz.rgb.shape != (len(targets), targets.height, targets.width, 3):
        raise InvalidInputError(f"target_xyz must be [{len(targets)},{targets.height},{targets.width},3]")
    target = target_xyz if target_xyz is not None else render_points(points, points, targets, **render_kwargs)
    reference = _render_distinct(points, points.to(target.rgb.dtype), references, **render_kwargs)
    (t_lo, t_hi), (r_lo, r_hi) = _bounds(target.rgb, target.covered), _bounds(reference.rgb, reference.covered)
    lo, hi = torch.minimum(t_lo, r_lo), torch.maximum(t_hi, r_hi)
    centre = (lo + hi) / 2
    extent = (hi - lo).amax(dim=-1).clamp(min=torch.finfo(hi.dtype).tiny)

    def colourise(xyz: Tensor, covered: Tensor) -> Tensor:  # same affine map for both maps of a pair
        rgb = (xyz - centre[:, None, None]).div_(extent[:, None, None, None]).add_(0.5).clamp_(0.0, 1.0)
        return rgb.mul_(covered[..., None])  # holes black

    return PointmapPair(
        colourise(target.rgb, target.covered),
        colourise(reference.rgb, reference.covered),
        target.covered,
        reference.covered,
    )


def _render_distinct(points: Tensor, xyz: Tensor, cameras: Camera, **render_kwargs: Any) -> CacheRender:
    """The cache's XYZ (``xyz``: the points in the output dtype) rendered into ``cameras``, each distinct camera once."""
    poses = torch.cat([cameras.K.flatten(1), cameras.c2w.flatten(1)], dim=1)
    distinct, inverse = torch.unique(poses, dim=0, return_inverse=True)
    if len(distinct) == len(cameras):
        return render_points(points, xyz, cameras, **render_kwargs)
    first = torch.full((len(distinct),), len(cameras), dtype=torch.long, device=inverse.device)
    first.scatter_reduce_(0, inverse, torch.arange(len(cameras), device=inverse.device), "amin")
    render = render_points(points, xyz, cameras[first], **render_kwargs)
    return CacheRender(render.rgb[inverse], render.depth[inverse], render.mask[inverse])


def pointmap_pair(points: Tensor, target: Camera, reference: Camera, **render_kwargs: Any) -> PointmapPair:
    """Pointmaps ``[H,W,3]`` of one target camera and one reference camera."""
    if len(target) != 1 or len(reference) != 1:
        raise InvalidInputError("pointmap_pair takes one target and one reference camera")
    return PointmapPair(*(t[0] for t in pointmap_pairs(points, target, reference, **render_kwargs)))


def _bounds(xyz: Tensor, covered: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image min and max ``[F,3]`` over covered pixels (``+inf`` / ``-inf`` where none)."""
    hidden = ~covered[..., None]
    return xyz.masked_fill(hidden, torch.inf).amin(dim=(1, 2)), xyz.masked_fill(hidden, -torch.inf).amax(dim=(1, 2))
