"""Camera conditioning of the released model: its camera normalisation, Plücker rays with its pixel offsets,
and per-frame quaternion + translation tokens (RELEASED_MODEL §5). Cameras are OpenCV world-to-camera 4x4."""

from __future__ import annotations

import torch
from torch import Tensor

from worldstereo.geometry.plucker import plucker_grid

CAMERA_SCALE = 2.0


def normalize_cameras(w2c: Tensor, count: int | None = None, scale: float = CAMERA_SCALE) -> Tensor:
    """``w2c [N,4,4]`` relative to camera 0, centred and scaled from the first ``count`` (default all) cameras.

    (1) ``w2c_i ← w2c_i · w2c_0⁻¹``; (2) centres within ``min(10·q₀.₉₇, 1e6)`` of their per-axis (lower) median
    are averaged and that mean subtracted from every centre; (3) translations scaled by ``scale / ‖centre₀‖``
    (``scale`` when the first centre is within 1e-5 of the origin). Float32, in the release's order of operations."""
    w2c = w2c.float()
    w2c = w2c @ w2c[:1].inverse().repeat(len(w2c), 1, 1)
    c2w = torch.linalg.inv(w2c)
    centres = c2w[: len(w2c) if count is None else count, :3, 3]
    distance = torch.norm(centres - centres.median(0, keepdim=True).values, dim=-1)
    valid = distance <= torch.clamp(torch.quantile(distance, 0.97) * 10, max=1e6)
    c2w[:, :3, 3] -= centres[valid].mean(0, keepdim=True)
    w2c = torch.linalg.inv(c2w)
    first = torch.norm(c2w[0, :3, 3])
    w2c[:, :3, 3] *= scale if bool(torch.isclose(first, first.new_zeros(()), atol=1e-5)) else scale / first
    return w2c


def release_plucker(w2c: Tensor, intrinsics: Tensor, height: int, width: int, out: Tensor | None = None) -> Tensor:
    """Rays ``[N, 6, H, W]`` = ``[d; o × d]`` for normalised ``w2c [N,4,4]`` and pixel ``intrinsics [N,3,3]``.

    Pixel ``(row, col)`` is sampled at ``x = col − 0.5``, ``y = row + 0.5`` (the release's offsets); ``d`` is
    the unit world direction, ``o`` the camera centre. Float32 as released: the cameras inverted in float32 as
    the release does, the rays (:func:`plucker_grid`) computed in float64 and rounded once, so they differ from
    the release's float32 arithmetic by its own rounding (< 1e-6). Non-finite results become zeros. Written into
    ``out`` (float32, any strides) when given."""
    w2c, intrinsics = w2c.float(), intrinsics.float()
    count, device = len(w2c), w2c.device
    c2w = torch.inverse(w2c).double()
    directions = c2w[:, :3, :3] @ intrinsics.inverse().double()  # x̂ → R K⁻¹ x̂
    cols = torch.arange(width, device=device, dtype=torch.float64) - 0.5
    rows = torch.arange(height, device=device, dtype=torch.float64) + 0.5
    if out is None:
        out = torch.empty((count, 6, height, width), device=device)
    return out if plucker_grid(directions, c2w[:, :3, 3], cols, rows, out) else out.zero_()


def matrix_to_quaternion(rotation: Tensor) -> Tensor:
    """``[..., 3, 3]`` → unit quaternions ``[..., 4]`` (real part first, made non-negative), in ``rotation``'s dtype."""
    m = rotation
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    q_abs = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22],
                        dim=-1).clamp_min(0).sqrt()
    candidates = torch.stack([
        torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], dim=-1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1),
    ], dim=-2) / (2 * q_abs.clamp_min(0.1))[..., None]
    best = q_abs.argmax(dim=-1)
    quaternion = candidates.gather(-2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    return torch.where(quaternion[..., :1] < 0, -quaternion, quaternion)


def camera_tokens(w2c_targets: Tensor, w2c_refs: Tensor, scale: float = CAMERA_SCALE) -> tuple[Tensor, Tensor]:
    """Per-camera ``[quaternion(4); translation(3)]`` of the jointly normalised w2c: targets ``[F,7]``, refs
    ``[R,7]`` (centring from the targets only)."""
    w2c = normalize_cameras(torch.cat([w2c_targets, w2c_refs]), count=len(w2c_targets), scale=scale)
    tokens = torch.cat([matrix_to_quaternion(w2c[:, :3, :3]), w2c[:, :3, 3]], dim=-1)
    return tokens[: len(w2c_targets)], tokens[len(w2c_targets):]
