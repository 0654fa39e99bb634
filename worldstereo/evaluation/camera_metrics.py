"""Camera-control accuracy of a generated video: RotErr, TransErr (CamI2V convention) and ATE.

Inputs are OpenCV camera-to-world poses ``[N,4,4]``: cameras recovered from the generated frames
and the requested (ground-truth) trajectory, frame for frame. RotErr is in radians.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from worldstereo.errors import InvalidInputError
from worldstereo.geometry.align import Sim3, umeyama
from worldstereo.geometry.camera import rigid_inverse


@dataclass(frozen=True)
class CameraMetrics:
    """``rot_err_rad``: summed geodesic angles (radians); ``trans_err``: summed distances between
    self-normalised relative centres (unitless); ``ate``: RMSE in ground-truth units."""

    rot_err_rad: float
    trans_err: float
    ate: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _check_pair(generated: Tensor, ground_truth: Tensor) -> None:
    if generated.ndim != 3 or generated.shape[-2:] != (4, 4) or generated.shape[0] == 0:
        raise InvalidInputError(f"poses must be non-empty [N,4,4], got {tuple(generated.shape)}")
    if generated.shape != ground_truth.shape:
        raise InvalidInputError(f"pose counts differ: {tuple(generated.shape)} vs {tuple(ground_truth.shape)}")


def relative_to_first(c2w: Tensor) -> Tensor:
    """Poses expressed in the first camera's frame: ``c2w[0]^-1 c2w[i]``, so frame 0 is the identity."""
    return rigid_inverse(c2w[:1]) @ c2w


def rotation_angles_rad(R_a: Tensor, R_b: Tensor) -> Tensor:
    """Geodesic angle ``[...]`` between rotations: arccos((tr(R_a R_b^T) - 1) / 2), in radians.

    Evaluated as atan2(sin, cos) of the same angle, which stays accurate near 0 and pi.
    """
    delta = R_a @ R_b.transpose(-1, -2)
    cos = (delta.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    skew = delta - delta.transpose(-1, -2)
    sin = torch.stack([skew[..., 2, 1], skew[..., 0, 2], skew[..., 1, 0]], dim=-1).norm(dim=-1) / 2
    return torch.atan2(sin, cos)


def rot_err_rad(generated: Tensor, ground_truth: Tensor) -> float:
    """RotErr: sum over frames of the angle between relative rotations (poses relative to frame 0), radians."""
    _check_pair(generated, ground_truth)
    gen, gt = relative_to_first(generated.double()), relative_to_first(ground_truth.double())
    return float(rotation_angles_rad(gen[:, :3, :3], gt[:, :3, :3]).sum())


def _self_normalised_centres(c2w: Tensor) -> Tensor:
    """Relative camera centres divided by their largest norm (left as is when all are at the origin)."""
    centres = relative_to_first(c2w)[:, :3, 3]
    scale = centres.norm(dim=-1).amax()
    return centres / scale if scale > 0 else centres


def trans_err(generated: Tensor, ground_truth: Tensor) -> float:
    """TransErr: sum over frames of ||t_gt - t_gen|| between relative centres, each trajectory scaled
    by its own largest camera-centre norm (so the value is scale-free)."""
    _check_pair(generated, ground_truth)
    gen, gt = _self_normalised_centres(generated.double()), _self_normalised_centres(ground_truth.double())
    return float((gt - gen).norm(dim=-1).sum())


def trajectory_alignment(generated: Tensor, ground_truth: Tensor) -> Sim3:
    """Sim(3) mapping the generated camera centres onto the ground-truth ones (Umeyama, with scale)."""
    _check_pair(generated, ground_truth)
    return umeyama(generated[:, :3, 3].double(), ground_truth[:, :3, 3].double(), with_scale=True)


def ate(generated: Tensor, ground_truth: Tensor) -> float:
    """Absolute trajectory error: RMSE of camera centres after Sim(3) Umeyama alignment (evo ``ape -as``).

    When all generated centres coincide, the best similarity collapses them onto the ground-truth
    centroid and the ATE is the RMS spread of the ground-truth centres.
    """
    _check_pair(generated, ground_truth)
    src, dst = generated[:, :3, 3].double(), ground_truth[:, :3, 3].double()
    spread = (src - src.mean(0)).norm(dim=-1).amax()
    if spread <= 1e-12 * (1.0 + src.abs().amax()):
        residual = dst - dst.mean(0)
    else:
        residual = trajectory_alignment(generated, ground_truth).apply(src) - dst
    return float(residual.square().sum(-1).mean().sqrt())


def camera_metrics(generated: Tensor, ground_truth: Tensor) -> CameraMetrics:
    """RotErr (radians), TransErr and ATE of a generated trajectory against the requested one."""
    return CameraMetrics(
        rot_err_rad(generated, ground_truth), trans_err(generated, ground_truth), ate(generated, ground_truth)
    )


__all__ = [
    "CameraMetrics",
    "ate",
    "camera_metrics",
    "relative_to_first",
    "rot_err_rad",
    "rotation_angles_rad",
    "trajectory_alignment",
    "trans_err",
]
