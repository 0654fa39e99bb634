"""Bringing a reconstruction into the ground-truth frame before scoring it (paper Sec. 4.3).

Two protocols: a first-frame anchor (ground-truth depth of the input view matched pixel by pixel to
the reconstructed first-frame points, Umeyama), or first-camera alignment (the reconstruction's first
camera made to coincide with the ground truth's) refined by ICP with scaling.
"""

from __future__ import annotations

import torch
from torch import Tensor

from worldstereo.errors import InvalidInputError
from worldstereo.geometry.align import Sim3, icp_refine, robust_umeyama, umeyama
from worldstereo.geometry.camera import Camera


def anchor_alignment(
    reconstructed_points: Tensor,
    gt_depth: Tensor,
    gt_camera: Camera,
    valid: Tensor | None = None,
    *,
    robust: bool = False,
) -> Sim3:
    """Sim(3) taking the reconstruction to the ground truth from first-frame anchors.

    ``reconstructed_points`` ``[H,W,3]`` is the reconstructed first-frame pointmap; ``gt_depth``
    ``[H,W]`` the ground-truth z-depth of the same view through ``gt_camera`` (one camera of that
    size). Pixels pair points; pixels without positive finite depth, with non-finite points, or
    outside ``valid`` are skipped. ``robust`` fits with RANSAC (``robust_umeyama``) instead.
    """
    shape = (gt_camera.height, gt_camera.width)
    if reconstructed_points.shape != (*shape, 3) or gt_depth.shape != shape:
        raise InvalidInputError(
            f"anchor maps must be pixel-matched to the {shape} camera: points {tuple(reconstructed_points.shape)}, "
            f"depth {tuple(gt_depth.shape)}"
        )
    gt_points = gt_camera[:1].to(dtype=torch.float64).backproject(gt_depth[None].double())[0]
    src = reconstructed_points.double()
    mask = torch.isfinite(src).all(-1) & torch.isfinite(gt_depth) & (gt_depth > 0)
    if valid is not None:
        mask &= valid.bool()
    if int(mask.sum()) < 3:
        raise InvalidInputError(f"anchor alignment needs at least 3 valid pixels, got {int(mask.sum())}")
    if robust:
        return robust_umeyama(src[mask], gt_points[mask])[0]
    return umeyama(src[mask], gt_points[mask], with_scale=True)


def first_camera_alignment(reconstructed_c2w: Tensor, gt_c2w: Tensor, scale: float = 1.0) -> Sim3:
    """The similarity of the given scale that maps the reconstruction's first camera onto the GT's.

    Poses are OpenCV c2w ``[4,4]`` or trajectories ``[N,4,4]`` (their first pose is used):
    R = R_gt R_rec^T, t = c_gt - s R c_rec, so the first centres coincide and the axes agree.
    """
    rec, gt = reconstructed_c2w.reshape(-1, 4, 4)[0].double(), gt_c2w.reshape(-1, 4, 4)[0].double()
    R = gt[:3, :3] @ rec[:3, :3].T
    s = torch.tensor(float(scale), dtype=torch.float64, device=R.device)
    return Sim3(scale=s, R=R, t=gt[:3, 3] - s * R @ rec[:3, 3])


def median_distance_ratio(
    reconstructed_points: Tensor, gt_points: Tensor, rec_center: Tensor, gt_center: Tensor
) -> float:
    """Initial scale: median distance of GT points from the GT first centre over the same for the reconstruction."""
    rec = (reconstructed_points.double() - rec_center.double()).norm(dim=-1).median()
    gt = (gt_points.double() - gt_center.double()).norm(dim=-1).median()
    if not rec > 0:
        raise InvalidInputError("the reconstruction collapses onto its first camera centre")
    return float(gt / rec)


def first_camera_icp_alignment(
    reconstructed_points: Tensor,
    gt_points: Tensor,
    reconstructed_c2w: Tensor,
    gt_c2w: Tensor,
    *,
    max_distance: float,
    iterations: int = 50,
    initial_scale: float | None = None,
) -> Sim3:
    """First-camera alignment, then point-to-point ICP with scaling (``icp_refine``) to refine scale.

    ``initial_scale`` defaults to ``median_distance_ratio`` about the two first camera centres;
    ``max_distance`` is the ICP correspondence radius in ground-truth units.
    """
    rec_center = reconstructed_c2w.reshape(-1, 4, 4)[0, :3, 3]
    gt_center = gt_c2w.reshape(-1, 4, 4)[0, :3, 3]
    scale = initial_scale
    if scale is None:
        scale = median_distance_ratio(reconstructed_points, gt_points, rec_center, gt_center)
    init = first_camera_alignment(reconstructed_c2w, gt_c2w, scale)
    src, dst = reconstructed_points.double(), gt_points.double()
    return icp_refine(src, dst, init, with_scale=True, max_distance=max_distance, iterations=iterations)


__all__ = ["anchor_alignment", "first_camera_alignment", "first_camera_icp_alignment", "median_distance_ratio"]
