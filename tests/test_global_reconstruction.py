"""The final global reconstruction: a robust affine fit in inverse depth, and ``exports/fused_global.ply`` scored
by the eval suite beside the incremental cloud."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from worldstereo.config import Settings, TrajectorySettings
from worldstereo.evaluation.suite import evaluate_case, synthetic_cases
from worldstereo.pipeline.backends import GeneratedVideo, GenerationRequest, Reconstruction
from worldstereo.pipeline.global_recon import GLOBAL, fit_inverse_depth
from worldstereo.pipeline.reconstructors.rendered_depth import RenderedDepthReconstructor

F64 = torch.float64
SCALES, SHIFTS = (0.5, 2.0, 1.3), (0.05, -0.02, 0.0)


def distort(depth: torch.Tensor) -> torch.Tensor:
    """Frame ``i``'s depth with its inverse mapped by ``(1/d - SHIFTS[i]) / SCALES[i]``: what the fit must undo."""
    index = torch.arange(len(depth)) % len(SCALES)
    scale, shift = torch.tensor(SCALES, dtype=F64)[index], torch.tensor(SHIFTS, dtype=F64)[index]
    inverse = (1 / depth.double() - shift[:, None, None]) / scale[:, None, None]
    return torch.where((depth > 0) & (inverse > 0), 1 / inverse, 0.0)


def test_inverse_depth_fit_recovers_each_frames_affine_map_despite_outliers() -> None:
    g = torch.Generator().manual_seed(0)
    target = 1 + 9 * torch.rand(3, 40, 50, generator=g, dtype=F64)
    depth = distort(target)
    wrong = torch.rand(3, 40, 50, generator=g) < 0.3
    depth = torch.where(wrong, depth * (2 + torch.rand(3, 40, 50, generator=g, dtype=F64)), depth)
    valid = torch.ones(3, 40, 50, dtype=torch.bool)
    valid[2] = False  # a frame the cache does not see keeps its own depth
    valid[2, :2, :3] = True
    fit = fit_inverse_depth(depth, target, valid)
    torch.testing.assert_close(fit.scale[:2], torch.tensor(SCALES[:2], dtype=F64), rtol=1e-9, atol=0)
    torch.testing.assert_close(fit.shift[:2], torch.tensor(SHIFTS[:2], dtype=F64), rtol=0, atol=1e-9)
    assert fit.fitted.tolist() == [True, True, False] and fit.scale[2] == 1 and fit.shift[2] == 0
    assert 0.65 < float(fit.inliers[0]) < 0.75  # the outliers are rejected


class AffineInverseDepth(RenderedDepthReconstructor):
    """Exact depth for the trajectories; over the memory bank (the global pass), depth off by an affine map in
    inverse depth per frame, as a model of relative depth gives it."""

    name = "affine-inverse-depth"

    def reconstruct(self, video: GeneratedVideo, request: GenerationRequest) -> Reconstruction:
        recon = super().reconstruct(video, request)
        if request.trajectory != GLOBAL:
            return recon
        return Reconstruction(recon.colors, None, recon.cameras, depth=distort(recon.depth).float())


@pytest.mark.slow
def test_eval_scores_the_global_cloud_beside_the_incremental_one(tmp_path: Path) -> None:
    room = next(case for case in synthetic_cases(tmp_path / "samples") if case.name == "room")
    settings = Settings(device="cpu", generator="oracle", resolution_scale=0.25, global_reconstruction=True,
                        reconstructor=f"{__name__}:AffineInverseDepth",
                        trajectory=TrajectorySettings(planner="presets", num_frames=5, order=("orbit", "up")))
    scores = evaluate_case(room, settings, tmp_path / "run")
    # each bank frame's depth is off by up to 2x before its fit; the fitted cloud re-samples the cache's render
    assert scores.f1 >= 0.95 and scores.f1_global >= 0.9 and scores.auc_global >= 0.85
