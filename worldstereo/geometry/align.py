"""Similarity alignment of point sets and camera trajectories: Umeyama, RANSAC/LMedS, scaled ICP."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from worldstereo.errors import InvalidInputError

_MAX_RESIDUALS = 1 << 22  # hypotheses x points evaluated at once


@dataclass(frozen=True)
class Sim3:
    """``x -> scale * R x + t`` with ``scale`` a 0-d tensor, ``R [3,3]`` a rotation and ``t [3]``."""

    scale: Tensor
    R: Tensor
    t: Tensor

    @classmethod
    def identity(cls, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Sim3:
        return cls(
            torch.ones((), dtype=dtype, device=device),
            torch.eye(3, dtype=dtype, device=device),
            torch.zeros(3, dtype=dtype, device=device),
        )

    @classmethod
    def from_matrix(cls, matrix: Tensor) -> Sim3:
        """From a ``[4,4]`` similarity ``[[sR, t], [0, 1]]``; the rotation is re-orthonormalised."""
        A = matrix[:3, :3]
        scale = torch.linalg.det(A).abs().pow(1 / 3)
        U, _, Vh = torch.linalg.svd(A / scale)
        R = U @ Vh
        return cls(scale, R, matrix[:3, 3].clone())

    @property
    def matrix(self) -> Tensor:
        """``[4,4]`` homogeneous matrix ``[[sR, t], [0, 1]]``."""
        out = torch.eye(4, dtype=self.R.dtype, device=self.R.device)
        out[:3, :3] = self.scale * self.R
        out[:3, 3] = self.t
        return out

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Sim3:
        return Sim3(self.scale.to(device, dtype), self.R.to(device, dtype), self.t.to(device, dtype))

    def apply(self, points: Tensor) -> Tensor:
        """Transform points ``[...,3]``."""
        sim = self.to(points.device, points.dtype)
        return sim.scale * points @ sim.R.T + sim.t

    def apply_c2w(self, c2w: Tensor) -> Tensor:
        """Move camera poses ``[...,4,4]`` with the world: rotations compose, centres are transformed, size is kept."""
        sim = self.to(c2w.device, c2w.dtype)
        out = c2w.clone()
        out[..., :3, :3] = sim.R @ c2w[..., :3, :3]
        out[..., :3, 3] = sim.apply(c2w[..., :3, 3])
        return out

    def inverse(self) -> Sim3:
        return Sim3(1 / self.scale, self.R.T, -(self.R.T @ self.t) / self.scale)

    def compose(self, other: Sim3) -> Sim3:
        """``self ∘ other``: apply ``other`` first."""
        other = other.to(self.R.device, self.R.dtype)
        return Sim3(self.scale * other.scale, self.R @ other.R, self.scale * self.R @ other.t + self.t)


def umeyama(src: Tensor, dst: Tensor, with_scale: bool = True, weights: Tensor | None = None) -> Sim3:
    """Least-squares similarity with ``dst ≈ s R src + t`` (Umeyama 1991), optionally weighted per point."""
    _check_pairs(src, dst)
    if weights is not None and weights.shape != src.shape[:1]:
        raise InvalidInputError(f"weights must be [P], got {tuple(weights.shape)}")
    if weights is not None and not bool((weights >= 0).all() and weights.sum() > 0):
        raise InvalidInputError("weights must be non-negative with a positive sum")
    if not bool(torch.isfinite(src).all() and torch.isfinite(dst).all()):
        raise InvalidInputError("correspondences must be finite")
    w = None if weights is None else weights[None]
    scale, R, t = _umeyama_batched(src[None], dst[None], w, with_scale)
    if not bool(torch.isfinite(scale).all()):
        raise InvalidInputError("degenerate correspondences: the source points do not spread")
    return Sim3(scale[0], R[0], t[0]).to(dtype=src.dtype)


def robust_umeyama(
    src: Tensor,
    dst: Tensor,
    *,
    with_scale: bool = True,
    threshold: float | None = None,
    iterations: int = 256,
    refinements: int = 3,
    seed: int = 0,
) -> tuple[Sim3, Tensor]:
    """Similarity robust to outlier correspondences; returns it and the inlier mask ``[P]``.

    ``iterations`` minimal 3-point hypotheses are fitted and scored at once. With ``threshold``
    given, the score is MSAC (sum of residuals² capped at threshold²) and inliers lie within the
    threshold. Without it, the hypothesis with the least median residual wins (LMedS, exact up to
    50% outliers) and the threshold is Rousseeuw's ``2.5 σ`` with the robust scale
    ``σ = 1.4826 (1 + 5/(P-3)) median residual``. The winner is then refitted on its inliers,
    ``refinements`` times at most, until the inlier set stops changing.
    """
    _check_pairs(src, dst)
    num = src.shape[0]
    samples = _distinct_triples(num, iterations, seed).to(src.device)
    x, y = src.to(torch.float64), dst.to(torch.float64)
    scale, R, t = _umeyama_batched(x[samples], y[samples], None, with_scale)

    scores = torch.empty(iterations, dtype=torch.float64, device=src.device)
    step = max(1, _MAX_RESIDUALS // num)
    for i in range(0, iterations, step):
        part = slice(i, i + step)
        residual = _residuals(x, y, scale[part], R[part], t[part])
        if threshold is None:
            scores[part] = residual.median(dim=1).values
        else:
            scores[part] = residual.square().clamp_max(threshold**2).sum(dim=1)
    best = int(torch.nan_to_num(scores, nan=math.inf).argmin())
    if threshold is None:
        extent = (y - y.mean(dim=0)).norm(dim=-1).max()
        sigma = 1.4826 * (1 + 5 / max(num - 3, 1)) * scores[best]
        threshold = float(torch.maximum(2.5 * sigma, 1e-9 * extent))

    model = Sim3(scale[best], R[best], t[best])
    inliers = _residuals(x, y, model.scale[None], model.R[None], model.t[None])[0] <= threshold
    for _ in range(refinements):
        if int(inliers.sum()) < 3:
            break
        model = umeyama(x, y, with_scale, inliers.to(torch.float64))
        refined = model.apply(x).sub_(y).norm(dim=-1) <= threshold
        if torch.equal(refined, inliers):
            break
        inliers = refined
    return model.to(dtype=src.dtype), inliers


def icp_refine(
    src_points: Tensor,
    dst_points: Tensor,
    init: Sim3,
    *,
    with_scale: bool = True,
    max_distance: float,
    iterations: int = 50,
) -> Sim3:
    """Refine ``init`` (mapping ``src`` onto ``dst``) by point-to-point ICP with open3d, scale included."""
    import open3d as o3d

    if max_distance <= 0:
        raise InvalidInputError(f"max_distance must be positive, got {max_distance}")
    clouds = []
    for points in (src_points, dst_points):
        if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] < 3:
            raise InvalidInputError(f"ICP needs [P>=3,3] point sets, got {tuple(points.shape)}")
        cloud = o3d.geometry.PointCloud()
        cloud.points = o3d.utility.Vector3dVector(points.detach().cpu().to(torch.float64).numpy())
        clouds.append(cloud)
    result = o3d.pipelines.registration.registration_icp(
        clouds[0],
        clouds[1],
        max_distance,
        init.matrix.detach().cpu().to(torch.float64).numpy(),
        o3d.pipelines.registration.TransformationEstimationPointToPoint(with_scaling=with_scale),
        o3d.pipelines.registration.ICPConvergenceCriteria(max_iteration=iterations),
    )
    matrix = torch.from_numpy(result.transformation.copy())
    return Sim3.from_matrix(matrix).to(src_points.device, src_points.dtype)


def rotation_angle_deg(R1: Tensor, R2: Tensor) -> Tensor:
    """Angle in degrees of the relative rotation ``R1 R2ᵀ``, batched over leading dims (atan2, so exact near 0)."""
    R = R1 @ R2.transpose(-1, -2)
    cos = (R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2  # Rodrigues: tr R = 1 + 2 cos θ
    skew = torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    return torch.rad2deg(torch.atan2(skew.norm(dim=-1) / 2, cos))  # R - Rᵀ = 2 sin θ [axis]ₓ; exact near 0 and π


def translation_angle_deg(t1: Tensor, t2: Tensor) -> Tensor:
    """Angle in degrees between translation directions (scale-free), batched over leading dims."""
    cos = torch.nn.functional.cosine_similarity(t1, t2, dim=-1)
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))


def _check_pairs(src: Tensor, dst: Tensor) -> None:
    if src.ndim != 2 or src.shape[1] != 3 or src.shape != dst.shape:
        raise InvalidInputError(f"src and dst must both be [P,3], got {tuple(src.shape)} and {tuple(dst.shape)}")
    if src.shape[0] < 3:
        raise InvalidInputError(f"a similarity needs at least 3 correspondences, got {src.shape[0]}")


def _distinct_triples(num: int, count: int, seed: int) -> Tensor:
    """``count`` uniformly drawn triples of distinct indices below ``num``, ``[count,3]``."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    a = torch.randint(num, (count,), generator=generator)
    b = torch.randint(num - 1, (count,), generator=generator)
    c = torch.randint(num - 2, (count,), generator=generator)
    b += b >= a  # skip a
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    c += c >= lo  # skip both, lowest first
    c += c >= hi
    return torch.stack([a, b, c], dim=1)


def _umeyama_batched(
    src: Tensor, dst: Tensor, weights: Tensor | None, with_scale: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Umeyama on ``B`` problems ``[B,P,3]`` at once, in float64: ``scale [B]``, ``R [B,3,3]``, ``t [B,3]``."""
    x, y = src.to(torch.float64), dst.to(torch.float64)
    w = torch.ones(x.shape[:2], dtype=torch.float64, device=x.device) if weights is None else weights.to(torch.float64)
    w = w / w.sum(dim=1, keepdim=True)
    mu_x = (w[..., None] * x).sum(dim=1)  # Eq. 34
    mu_y = (w[..., None] * y).sum(dim=1)  # Eq. 35
    xc, yc = x - mu_x[:, None], y - mu_y[:, None]
    var_x = (w * xc.square().sum(dim=-1)).sum(dim=1)  # Eq. 36
    cov = torch.einsum("bp,bpi,bpj->bij", w, yc, xc)  # Eq. 38
    U, D, Vh = torch.linalg.svd(cov)
    S = torch.ones_like(D)
    S[:, 2] = torch.where(torch.linalg.det(U) * torch.linalg.det(Vh) < 0, -1.0, 1.0)  # Eq. 39, 43
    R = U @ (S[..., None] * Vh)  # Eq. 40
    scale = (D * S).sum(dim=-1) / var_x if with_scale else torch.ones_like(var_x)  # Eq. 42
    t = mu_y - scale[:, None] * (R @ mu_x[..., None])[..., 0]  # Eq. 41
    return scale, R, t


def _residuals(x: Tensor, y: Tensor, scale: Tensor, R: Tensor, t: Tensor) -> Tensor:
    """Distances ``[B,P]`` between ``y`` and each of ``B`` similarities applied to ``x``."""
    moved = scale[:, None, None] * torch.einsum("bij,pj->bpi", R, x) + t[:, None]
    return (moved - y).norm(dim=-1)
