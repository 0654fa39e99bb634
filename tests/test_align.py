"""Similarity alignment on ground truth: Umeyama, robust fitting with outliers, scaled ICP, Sim(3) algebra."""

from __future__ import annotations

import math

import pytest
import torch

from worldstereo.errors import InvalidInputError
from worldstereo.geometry.align import (
    Sim3,
    icp_refine,
    robust_umeyama,
    rotation_angle_deg,
    translation_angle_deg,
    umeyama,
)
from worldstereo.geometry.camera import Camera, look_at

F64 = torch.float64


def rotation(axis: list[float], degrees: float) -> torch.Tensor:
    """Rodrigues' formula."""
    k = torch.nn.functional.normalize(torch.tensor(axis, dtype=F64), dim=0)
    K = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=F64)
    a = math.radians(degrees)
    return torch.eye(3, dtype=F64) + math.sin(a) * K + (1 - math.cos(a)) * K @ K


def random_sim3(seed: int) -> Sim3:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=F64))
    Q = Q * torch.linalg.det(Q)
    scale = torch.tensor(0.2 + 4 * torch.rand(1, generator=g).item(), dtype=F64)
    return Sim3(scale, Q, torch.randn(3, generator=g, dtype=F64) * 3)


def bumpy_surface(n: int, seed: int = 0) -> torch.Tensor:
    """Points on a non-symmetric height field, so that ICP has a unique answer."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=F64) * 4 - 2
    z = 0.4 * torch.sin(1.7 * xy[:, 0]) * torch.cos(1.1 * xy[:, 1]) + 0.15 * xy[:, 0] ** 2 + 0.05 * xy[:, 1] ** 3
    return torch.cat([xy, z[:, None]], dim=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_umeyama_recovers_a_similarity_exactly(seed: int) -> None:
    truth = random_sim3(seed)
    src = torch.randn(50, 3, dtype=F64, generator=torch.Generator().manual_seed(100 + seed))
    fit = umeyama(src, truth.apply(src))
    assert fit.scale.item() == pytest.approx(truth.scale.item(), abs=1e-6)
    assert torch.allclose(fit.R, truth.R, atol=1e-6) and torch.allclose(fit.t, truth.t, atol=1e-6)
    rigid = umeyama(src, Sim3(torch.tensor(1.0, dtype=F64), truth.R, truth.t).apply(src), with_scale=False)
    assert rigid.scale.item() == 1.0 and torch.allclose(rigid.R, truth.R, atol=1e-6)


def test_umeyama_weights_ignore_zero_weight_points_and_avoid_reflections() -> None:
    truth = random_sim3(3)
    src = torch.randn(40, 3, dtype=F64, generator=torch.Generator().manual_seed(8))
    dst = truth.apply(src)
    dst[:10] += 5.0
    weights = torch.ones(40, dtype=F64)
    weights[:10] = 0
    fit = umeyama(src, dst, weights=weights)
    assert torch.allclose(fit.R, truth.R, atol=1e-6) and fit.scale.item() == pytest.approx(truth.scale.item(), abs=1e-6)

    mirrored = src * torch.tensor([1.0, 1.0, -1.0], dtype=F64)  # no rotation maps src onto its mirror image
    assert torch.linalg.det(umeyama(src, mirrored).R).item() == pytest.approx(1.0)
    with pytest.raises(InvalidInputError):
        umeyama(src[:2], dst[:2])
    with pytest.raises(InvalidInputError):
        umeyama(src, dst, weights=torch.zeros(40, dtype=F64))


@pytest.mark.parametrize("threshold", [None, 0.05])
def test_robust_umeyama_with_30_percent_outliers(threshold: float | None) -> None:
    truth = random_sim3(4)
    g = torch.Generator().manual_seed(11)
    src = torch.randn(2000, 3, dtype=F64, generator=g)
    dst = truth.apply(src) + torch.randn(2000, 3, dtype=F64, generator=g) * 0.01
    outliers = torch.rand(2000, generator=g) < 0.3
    dst[outliers] = torch.randn(int(outliers.sum()), 3, dtype=F64, generator=g) * 3 + dst.mean(dim=0)

    fit, inliers = robust_umeyama(src, dst, threshold=threshold)
    assert rotation_angle_deg(fit.R, truth.R).item() < 0.5
    assert fit.scale.item() == pytest.approx(truth.scale.item(), rel=0.01)
    assert (inliers == ~outliers).float().mean() > 0.95
    plain = umeyama(src, dst)
    assert rotation_angle_deg(plain.R, truth.R).item() > rotation_angle_deg(fit.R, truth.R).item()


def test_robust_umeyama_is_reproducible() -> None:
    src = torch.randn(300, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    dst = random_sim3(5).apply(src)
    dst[::3] = 0.0
    a, mask_a = robust_umeyama(src, dst, seed=3)
    b, mask_b = robust_umeyama(src, dst, seed=3)
    assert torch.equal(a.R, b.R) and torch.equal(mask_a, mask_b)


def test_icp_refine_recovers_a_small_perturbation_including_scale() -> None:
    dst = bumpy_surface(6000)
    truth = Sim3(torch.tensor(1.08, dtype=F64), rotation([0.3, -1.0, 0.5], 12.0), torch.tensor([0.2, -0.1, 0.3], dtype=F64))
    src = truth.inverse().apply(dst)  # truth maps src onto dst
    init = Sim3(torch.tensor(1.0, dtype=F64), rotation([0.3, -1.0, 0.5], 9.0), torch.tensor([0.15, -0.05, 0.25], dtype=F64))
    fit = icp_refine(src, dst, init, max_distance=0.5, iterations=100)
    assert rotation_angle_deg(fit.R, truth.R).item() < 0.1
    assert fit.scale.item() == pytest.approx(1.08, rel=2e-3)
    assert (fit.apply(src) - dst).norm(dim=-1).mean().item() < 5e-3
    assert rotation_angle_deg(init.R, truth.R).item() > 2.0


def test_sim3_algebra() -> None:
    a, b = random_sim3(6), random_sim3(7)
    x = torch.randn(20, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(a.inverse().apply(a.apply(x)), x, atol=1e-10)
    assert torch.allclose(a.compose(b).apply(x), a.apply(b.apply(x)), atol=1e-10)
    homogeneous = torch.cat([x, torch.ones(20, 1, dtype=F64)], dim=1) @ a.matrix.T
    assert torch.allclose(homogeneous[:, :3], a.apply(x), atol=1e-10)
    assert torch.allclose(Sim3.from_matrix(a.matrix).matrix, a.matrix, atol=1e-10)


def test_moving_cameras_with_the_world_keeps_every_projection() -> None:
    sim = random_sim3(8)
    eyes = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.5, -0.2]], dtype=F64)
    c2w = look_at(eyes, torch.tensor([0.0, 0.0, 5.0], dtype=F64).expand(2, 3), torch.tensor([0.0, -1.0, 0.0], dtype=F64))
    camera = Camera.from_fov(c2w, 30, 40, 60.0)
    x = torch.randn(100, 3, dtype=F64, generator=torch.Generator().manual_seed(4)) + torch.tensor([0.0, 0.0, 5.0], dtype=F64)
    moved = Camera(camera.K, sim.apply_c2w(camera.c2w), 30, 40)
    uv, z = camera.project(x)
    uv_moved, z_moved = moved.project(sim.apply(x))
    assert torch.allclose(uv_moved, uv, atol=1e-8) and torch.allclose(z_moved, sim.scale * z, atol=1e-8)
    R = moved.c2w[:, :3, :3]
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3, dtype=F64).expand(2, 3, 3), atol=1e-12)


def test_error_helpers() -> None:
    R = rotation([0.0, 0.0, 1.0], 30.0)
    assert rotation_angle_deg(R, torch.eye(3, dtype=F64)).item() == pytest.approx(30.0)
    assert rotation_angle_deg(R, R).item() == pytest.approx(0.0, abs=1e-12)
    angles = torch.tensor([0.0, 1e-7, 1e-4, 45.0, 179.0, 180.0], dtype=F64)  # arccos of the trace loses ~1e-6° near 0
    batch = torch.stack([rotation([1.0, 2.0, 3.0], float(d)) for d in angles])
    assert torch.allclose(rotation_angle_deg(batch, torch.eye(3, dtype=F64)), angles, rtol=1e-8, atol=1e-12)
    t = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    assert translation_angle_deg(t, torch.tensor([2.0, 2.0, 0.0], dtype=F64)).item() == pytest.approx(45.0)
