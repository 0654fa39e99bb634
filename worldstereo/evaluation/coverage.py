"""Coverage of a synthetic scene after each trajectory: completeness (share of the reachable surface within ``tau`` of
the cache) and F1 of the cache as it stood after trajectory ``k``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from worldstereo.evaluation.pointcloud_metrics import point_cloud_scores


@dataclass(frozen=True)
class CoverageStep:
    """The cache after ``k`` trajectories (``name``: the last one, ``init`` for k = 0) against the reachable surface."""

    k: int
    name: str
    completeness: float
    f1: float


def coverage_curve(points: Tensor, counts: list[tuple[str, int]], truth: Tensor, tau: float) -> list[CoverageStep]:
    """Scores of the growing cache: ``points`` is the final cache (it only grows, in order), ``counts`` the name and
    cache size after init and after each trajectory, in run order."""
    steps = []
    for k, (name, count) in enumerate(counts):
        scores = point_cloud_scores(points[:count].to(torch.float64), truth, tau)
        steps.append(CoverageStep(k, name, scores.recall, scores.f1))
    return steps
