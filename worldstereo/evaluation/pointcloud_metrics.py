"""Reconstruction accuracy and completeness against a ground-truth cloud (Tanks-and-Temples F-score, AUC).

Nearest-neighbour distances come from SciPy's ``cKDTree`` on the CPU: O((P + Q) log Q) time and
O(P + Q) memory on all cores, where a dense ``cdist`` would need O(P Q) memory or many chunks.
Thresholds are absolute, in the units of the ground truth; ``tau_from_extent`` derives one from the
scene size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from worldstereo.errors import InvalidInputError


@dataclass(frozen=True)
class PointCloudScores:
    """Scores of one reconstruction; ``auc`` is the mean F-score over thresholds in ``[0, tau_max]``."""

    tau: float
    precision: float
    recall: float
    f1: float
    tau_max: float
    auc: float


def _as_points(points: Tensor, name: str) -> np.ndarray:
    if points.ndim != 2 or points.shape[-1] != 3 or points.shape[0] == 0:
        raise InvalidInputError(f"{name} must be a non-empty [P,3] cloud, got {tuple(points.shape)}")
    array = points.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(array).all():
        raise InvalidInputError(f"{name} holds non-finite coordinates")
    return array


def nearest_distances(queries: Tensor, reference: Tensor) -> Tensor:
    """Distance from each query point ``[P,3]`` to its nearest reference point ``[Q,3]``: float64 ``[P]``."""
    ref = _as_points(reference, "reference")
    dist, _ = cKDTree(ref).query(_as_points(queries, "queries"), k=1, workers=-1)
    return torch.from_numpy(dist).to(queries.device)


def _f_score(precision: Tensor, recall: Tensor) -> Tensor:
    """F = 2PR / (P + R), 0 where both vanish."""
    total = precision + recall
    return torch.where(total > 0, 2 * precision * recall / total.clamp_min(1e-300), torch.zeros_like(total))


def _shares_below(sorted_distances: Tensor, thresholds: Tensor) -> Tensor:
    """Share of distances strictly below each threshold (the Tanks-and-Temples ``d < tau`` test)."""
    return torch.searchsorted(sorted_distances, thresholds, right=False).to(torch.float64) / sorted_distances.numel()


def f_score_curve(d_rec: Tensor, d_gt: Tensor, thresholds: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Precision, recall and F-score ``[K]`` at each threshold, from reconstruction->GT distances
    ``d_rec`` and GT->reconstruction distances ``d_gt``."""
    sorted_rec, sorted_gt = d_rec.sort().values, d_gt.sort().values
    thresholds = thresholds.to(sorted_rec)
    precision, recall = _shares_below(sorted_rec, thresholds), _shares_below(sorted_gt, thresholds)
    return precision, recall, _f_score(precision, recall)


def f_score_auc(d_rec: Tensor, d_gt: Tensor, tau_max: float) -> float:
    """(1 / tau_max) * integral over t in [0, tau_max] of F(t) dt, in [0, 1].

    F(t) is a step function of t that changes only at the measured distances, so the integral is
    evaluated exactly over those breakpoints; it is the limit of the mean of F over
    ``linspace(0, tau_max, K)`` as K grows.
    """
    if tau_max <= 0:
        raise InvalidInputError(f"tau_max must be positive, got {tau_max}")
    inside = torch.cat([d_rec[d_rec < tau_max], d_gt[d_gt < tau_max]])
    ends = torch.tensor([0.0, tau_max], dtype=inside.dtype, device=inside.device)
    breaks = torch.unique(torch.cat([ends, inside]))  # sorted
    _, _, f = f_score_curve(d_rec, d_gt, 0.5 * (breaks[1:] + breaks[:-1]))  # F is constant between breaks
    return float((f * breaks.diff()).sum() / tau_max)


def tau_from_extent(points: Tensor, ratio: float = 0.01) -> float:
    """A scene-wise threshold: ``ratio`` times the diagonal of the cloud's axis-aligned bounding box."""
    array = _as_points(points, "points")
    return float(ratio * np.linalg.norm(array.max(0) - array.min(0)))


def point_cloud_scores(
    reconstructed: Tensor, ground_truth: Tensor, tau: float, *, auc_max_ratio: float = 5.0
) -> PointCloudScores:
    """Precision (share of reconstructed points within ``tau`` of the GT), recall (share of GT points
    within ``tau`` of the reconstruction), their F-score, and the F-score AUC over
    ``[0, auc_max_ratio * tau]``. Both clouds must already be aligned."""
    if tau <= 0:
        raise InvalidInputError(f"tau must be positive, got {tau}")
    d_rec = nearest_distances(reconstructed, ground_truth).cpu()
    d_gt = nearest_distances(ground_truth, reconstructed).cpu()
    precision, recall, f1 = (v.item() for v in f_score_curve(d_rec, d_gt, torch.tensor([tau], dtype=d_rec.dtype)))
    tau_max = auc_max_ratio * tau
    return PointCloudScores(tau, precision, recall, f1, tau_max, f_score_auc(d_rec, d_gt, tau_max))


__all__ = [
    "PointCloudScores",
    "f_score_auc",
    "f_score_curve",
    "nearest_distances",
    "point_cloud_scores",
    "tau_from_extent",
]
