"""Evaluation metrics against hand-computed values, independent references and invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from scipy.spatial.transform import Rotation

from worldstereo.errors import ConfigurationError, InvalidInputError
from worldstereo.evaluation.camera_metrics import ate, camera_metrics, rot_err_rad, rotation_angles_rad, trans_err
from worldstereo.evaluation.eval_alignment import (
    anchor_alignment,
    first_camera_alignment,
    first_camera_icp_alignment,
)
from worldstereo.evaluation.image_metrics import LPIPS, lpips, psnr, ssim
from worldstereo.evaluation.pointcloud_metrics import (
    f_score_auc,
    f_score_curve,
    nearest_distances,
    point_cloud_scores,
    tau_from_extent,
)
from worldstereo.evaluation.retrieval_metrics import TrajectoryRetrieval, fov_overlap_score, summarize_retrieval
from worldstereo.geometry.camera import Camera, look_at

# --- helpers -------------------------------------------------------------------------------------


def _vec(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _rotation(rotvec) -> torch.Tensor:
    return torch.from_numpy(Rotation.from_rotvec(np.asarray(rotvec, dtype=np.float64)).as_matrix())


def _pose(R: torch.Tensor, centre) -> torch.Tensor:
    T = torch.eye(4, dtype=torch.float64).repeat(*R.shape[:-2], 1, 1)
    T[..., :3, :3] = R
    T[..., :3, 3] = torch.as_tensor(centre, dtype=torch.float64)
    return T


def _random_sim3(seed: int, scale: float) -> tuple[float, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    return scale, _rotation(rng.normal(size=3)), torch.from_numpy(rng.normal(size=3) * 3)


def _apply_points(sim, points: torch.Tensor) -> torch.Tensor:
    s, R, t = sim
    return s * points @ R.T + t


def _apply_c2w(sim, c2w: torch.Tensor) -> torch.Tensor:
    s, R, t = sim
    return _pose(R @ c2w[..., :3, :3], _apply_points(sim, c2w[..., :3, 3]))


def _orbit(n: int = 12) -> torch.Tensor:
    """Cameras on an arc around a point, looking at it."""
    angles = torch.linspace(0, math.radians(90), n, dtype=torch.float64)
    eye = torch.stack([2 * torch.sin(angles), 0.3 * torch.sin(3 * angles), -2 * torch.cos(angles) + 2], -1)
    return look_at(eye, _vec(0.0, 0.0, 2.0).expand_as(eye), _vec(0.0, -1.0, 0.0).expand_as(eye))


def _box_cloud(n: int, seed: int = 0) -> torch.Tensor:
    """Points on five faces of a room-like box (open towards -z), non-symmetric so ICP has a unique fit."""
    g = torch.Generator().manual_seed(seed)
    uv = torch.rand(n, 2, generator=g, dtype=torch.float64)
    face = torch.randint(0, 5, (n,), generator=g)
    size = _vec(4.0, 2.5, 3.0)
    p = torch.zeros(n, 3, dtype=torch.float64)
    axes = [(0, 1, 2, 1.0), (1, 2, 0, 0.0), (1, 2, 0, 1.0), (0, 2, 1, 0.0), (0, 2, 1, 1.0)]
    for k, (a, b, c, v) in enumerate(axes):
        m = face == k
        p[m, a], p[m, b], p[m, c] = uv[m, 0], uv[m, 1], v
    return (p - 0.5) * size + _vec(0.0, 0.0, 2.0)


# --- camera metrics ------------------------------------------------------------------------------


def test_identical_trajectories_score_zero():
    c2w = _orbit()
    m = camera_metrics(c2w, c2w.clone())
    assert m.rot_err_rad == pytest.approx(0, abs=1e-7)
    assert m.trans_err == pytest.approx(0, abs=1e-12)
    assert m.ate == pytest.approx(0, abs=1e-9)


def test_rotation_angle_matches_arccos_definition():
    R_a, R_b = _rotation([0.3, -0.2, 0.5]), _rotation([-0.1, 0.4, 0.2])
    expected = math.acos((torch.trace(R_a @ R_b.T).item() - 1) / 2)
    assert rotation_angles_rad(R_a, R_b).item() == pytest.approx(expected, rel=1e-12)
    assert rotation_angles_rad(R_a, R_a).item() == pytest.approx(0, abs=1e-12)


def test_rot_err_of_two_degree_noise_per_frame():
    """Every frame after the first is rotated by exactly 2 deg about its own random axis (in the camera
    frame, not cumulative): each relative rotation is off by 2 deg, RotErr = (N - 1) * 2 deg."""
    gt = _orbit(10)
    g = torch.Generator().manual_seed(3)
    axes = torch.nn.functional.normalize(torch.randn(10, 3, generator=g, dtype=torch.float64), dim=-1)
    noise = _rotation((axes * math.radians(2.0)).numpy())
    noise[0] = torch.eye(3, dtype=torch.float64)
    gen = _pose(gt[:, :3, :3] @ noise, gt[:, :3, 3])
    assert rot_err_rad(gen, gt) == pytest.approx(9 * math.radians(2.0), rel=1e-9)


def test_rot_err_of_cumulative_drift():
    """Frame i drifts by i * 2 deg about one fixed axis: RotErr = 2 deg * N (N - 1) / 2."""
    gt = _orbit(8)
    drift = _rotation([[0, 0, math.radians(2.0) * i] for i in range(8)])
    gen = _pose(drift @ gt[:, :3, :3], gt[:, :3, 3])
    assert rot_err_rad(gen, gt) == pytest.approx(math.radians(2.0) * 28, rel=1e-9)


def test_trans_err_hand_example():
    """Centres along x (GT) vs along y (generated), both normalised by their farthest centre (2):
    TransErr = 0 + |(.5,-.5)| + |(1,-1)| = 1.5 sqrt(2)."""
    eye = torch.eye(3, dtype=torch.float64).expand(3, 3, 3)
    gt = _pose(eye, [[0, 0, 0], [1, 0, 0], [2, 0, 0]])
    gen = _pose(eye, [[0, 0, 0], [0, 1, 0], [0, 2, 0]])
    assert trans_err(gen, gt) == pytest.approx(1.5 * math.sqrt(2), rel=1e-12)
    # a generated trajectory of another scale but the same shape scores 0
    assert trans_err(_pose(eye, [[0, 0, 0], [5, 0, 0], [10, 0, 0]]), gt) == pytest.approx(0, abs=1e-12)


def test_ate_hand_example():
    """GT centres (+-1,0,0), (0,+-1,0); generated (+-1,0,0), (0,+-3,0). Umeyama: s = (1+a)/(1+a^2) = 0.4
    with R = I, t = 0; residuals 0.6 (x2) and 0.2 (x2): ATE = sqrt((0.36+0.04)/2) = sqrt(0.2)."""
    eye = torch.eye(3, dtype=torch.float64).expand(4, 3, 3)
    gt = _pose(eye, [[-1, 0, 0], [1, 0, 0], [0, 1, 0], [0, -1, 0]])
    gen = _pose(eye, [[-1, 0, 0], [1, 0, 0], [0, 3, 0], [0, -3, 0]])
    assert ate(gen, gt) == pytest.approx(math.sqrt(0.2), rel=1e-9)


def test_ate_of_collapsed_trajectory_is_gt_spread():
    eye = torch.eye(3, dtype=torch.float64).expand(3, 3, 3)
    gt = _pose(eye, [[-1, 0, 0], [1, 0, 0], [0, 0, 0]])
    gen = _pose(eye, [[4, 4, 4], [4, 4, 4], [4, 4, 4]])
    assert ate(gen, gt) == pytest.approx(math.sqrt(2 / 3), rel=1e-12)


def test_camera_metrics_invariant_to_global_sim3():
    gt = _orbit(16)
    g = torch.Generator().manual_seed(5)
    noise = _rotation((torch.randn(16, 3, generator=g, dtype=torch.float64) * 0.03).numpy())
    gen = _pose(gt[:, :3, :3] @ noise, gt[:, :3, 3] + 0.05 * torch.randn(16, 3, generator=g, dtype=torch.float64))
    before = camera_metrics(gen, gt)
    assert before.rot_err_rad > 0.1 and before.trans_err > 0.05 and before.ate > 0.01
    for seed, scale in ((1, 0.37), (2, 4.2)):
        moved = _apply_c2w(_random_sim3(seed, scale), gen)
        after = camera_metrics(moved, gt)
        assert after.rot_err_rad == pytest.approx(before.rot_err_rad, rel=1e-9)
        assert after.trans_err == pytest.approx(before.trans_err, rel=1e-9)
        assert after.ate == pytest.approx(before.ate, rel=1e-7)
    # a trajectory that is an exact similarity copy of the ground truth scores 0
    copy = camera_metrics(_apply_c2w(_random_sim3(7, 2.5), gt), gt)
    assert copy.rot_err_rad == pytest.approx(0, abs=1e-6) and copy.ate == pytest.approx(0, abs=1e-9)
    assert copy.trans_err == pytest.approx(0, abs=1e-9)


def test_camera_metrics_reject_mismatched_inputs():
    with pytest.raises(InvalidInputError):
        camera_metrics(_orbit(5), _orbit(6))
    with pytest.raises(InvalidInputError):
        rot_err_rad(torch.eye(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64))


# --- image metrics -------------------------------------------------------------------------------


def test_psnr_hand_values():
    a = torch.full((2, 3, 8, 8, 3), 0.5, dtype=torch.float64)
    b = a + 0.1  # MSE 0.01
    assert torch.allclose(psnr(a, b), torch.full((2, 3), 20.0, dtype=torch.float64))
    assert psnr(a * 255, b * 255, data_range=255.0)[0, 0].item() == pytest.approx(20.0)
    assert torch.isinf(psnr(a, a)).all()


def test_ssim_of_constant_images():
    """No variance anywhere: SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1) with C1 = 1e-4."""
    a = torch.full((16, 20, 3), 0.2, dtype=torch.float64)
    b = torch.full((16, 20, 3), 0.6, dtype=torch.float64)
    expected = (2 * 0.2 * 0.6 + 1e-4) / (0.04 + 0.36 + 1e-4)
    assert ssim(a, b).item() == pytest.approx(expected, rel=1e-9)


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Independent SSIM: SciPy Gaussian filtering (radius 5 = 11 taps), then the valid region."""
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for ch in range(a.shape[-1]):
        x, y = a[..., ch], b[..., ch]
        f = lambda im: gaussian_filter(im, sigma=1.5, truncate=3.5)[5:-5, 5:-5]  # noqa: E731
        mx, my = f(x), f(y)
        vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        values.append(s.mean())
    return float(np.mean(values))


def test_ssim_matches_independent_reference():
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.avg_pool2d(torch.rand(2, 3, 40, 52, generator=g, dtype=torch.float64), 3, 1, 1)
    a = base.permute(0, 2, 3, 1)
    b = (a + 0.08 * torch.randn(a.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    got = ssim(a, b)
    assert got.shape == (2,)
    for i in range(2):
        assert got[i].item() == pytest.approx(_ssim_reference(a[i].numpy(), b[i].numpy()), abs=1e-10)
    assert torch.allclose(ssim(a, a), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(ssim(b, a), got)
    noisier = (a + 0.2 * torch.randn(a.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    assert (ssim(a, noisier) < got).all()


def test_lpips_requires_local_weights(tmp_path):
    image = torch.rand(32, 32, 3)
    with pytest.raises(ConfigurationError, match="local weights"):
        lpips(image, image, None)
    with pytest.raises(ConfigurationError, match="local weights"):
        lpips(image, image, tmp_path / "missing.pth")
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in LPIPS("alex").state_dict().items() if not k.startswith("lins")}, partial)
    with pytest.raises(ConfigurationError, match="lack"):
        lpips(image, image, partial)


def test_lpips_zero_for_identical_images_with_random_network(tmp_path):
    torch.manual_seed(0)
    model = LPIPS("alex")
    with torch.no_grad():  # non-negative heads, as in trained LPIPS
        for lin in model.lins:
            lin.weight.abs_()
    path = tmp_path / "alex.pth"
    torch.save(model.state_dict(), path)
    a = torch.rand(2, 48, 64, 3)
    b = (a + 0.2 * torch.randn_like(a)).clamp(0, 1)
    same = lpips(a, a, path)
    assert same.shape == (2,) and torch.allclose(same, torch.zeros(2), atol=1e-7)
    different = lpips(a, b, path)
    assert (different > 1e-4).all()
    with torch.no_grad():
        direct = model.eval()(a.permute(0, 3, 1, 2) * 2 - 1, b.permute(0, 3, 1, 2) * 2 - 1)
    assert torch.allclose(different, direct, rtol=1e-5, atol=1e-7)
    # the lpips package's key layout (net.sliceK.I.*, linK.model.1.weight + lins alias) loads the same network
    slice_of = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
    legacy = {}
    for key, value in model.state_dict().items():
        kind, index, leaf = key.split(".")
        if kind == "features":
            legacy[f"net.slice{slice_of[int(index)]}.{index}.{leaf}"] = value
        else:
            legacy[f"lin{index}.model.1.weight"] = value
            legacy[f"lins.{index}.model.1.weight"] = value
    legacy["scaling_layer.shift"] = torch.zeros(1, 3, 1, 1)
    legacy_path = tmp_path / "alex_lpips_layout.pth"
    torch.save(legacy, legacy_path)
    assert torch.allclose(lpips(a, b, legacy_path), different, rtol=1e-6)


# --- point-cloud metrics -------------------------------------------------------------------------


def test_identical_clouds_score_one():
    cloud = _box_cloud(2000)
    s = point_cloud_scores(cloud, cloud.clone(), tau=0.01)
    assert (s.precision, s.recall, s.f1, s.auc) == (1.0, 1.0, 1.0, 1.0)


def test_f_score_hand_example():
    """GT 0,1,2,3 on x. Reconstruction at distances .05, .2, 7 from it -> precision 1/3 at tau .1.
    GT->reconstruction distances .05, .2, sqrt(1.04), sqrt(4.04) -> recall 1/4. F = 2/7."""
    gt = torch.tensor([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]], dtype=torch.float64)
    rec = torch.tensor([[0, 0, 0.05], [1, 0, 0.2], [10, 0, 0]], dtype=torch.float64)
    s = point_cloud_scores(rec, gt, tau=0.1)
    assert s.precision == pytest.approx(1 / 3)
    assert s.recall == pytest.approx(1 / 4)
    assert s.f1 == pytest.approx(2 / 7)


def test_auc_hand_example():
    """GT {0, 10}, reconstruction {0, 1} on x, tau_max = 5 * 0.4 = 2. On (0,1) P = R = 1/2, F = 1/2;
    on (1,2) P = 1, R = 1/2, F = 2/3. AUC = (1/2 + 2/3) / 2 = 7/12."""
    gt = torch.tensor([[0, 0, 0], [10, 0, 0]], dtype=torch.float64)
    rec = torch.tensor([[0, 0, 0], [1, 0, 0]], dtype=torch.float64)
    s = point_cloud_scores(rec, gt, tau=0.4)
    assert (s.precision, s.recall, s.f1) == pytest.approx((0.5, 0.5, 0.5))
    assert s.tau_max == pytest.approx(2.0)
    assert s.auc == pytest.approx(7 / 12, rel=1e-12)
    single = f_score_auc(_vec(0.5), _vec(0.5), 2.0)
    assert single == pytest.approx(0.75)  # F jumps from 0 to 1 at 0.5


def test_auc_is_the_mean_f_over_a_fine_threshold_grid():
    g = torch.Generator().manual_seed(1)
    d_rec = torch.rand(500, generator=g, dtype=torch.float64) ** 2
    d_gt = torch.rand(700, generator=g, dtype=torch.float64)
    grid = torch.linspace(0, 0.8, 200_001, dtype=torch.float64)
    _, _, f = f_score_curve(d_rec, d_gt, grid)
    assert f_score_auc(d_rec, d_gt, 0.8) == pytest.approx(f.mean().item(), abs=1e-4)


def test_nearest_distances_match_brute_force():
    g = torch.Generator().manual_seed(2)
    q, r = torch.randn(300, 3, generator=g, dtype=torch.float64), torch.randn(400, 3, generator=g, dtype=torch.float64)
    expected = torch.cdist(q, r).amin(dim=1)
    assert torch.allclose(nearest_distances(q, r), expected, atol=1e-12)
    with pytest.raises(InvalidInputError):
        nearest_distances(torch.empty(0, 3), r)
    with pytest.raises(InvalidInputError):
        nearest_distances(torch.full((2, 3), float("nan")), r)


def test_tau_from_extent():
    cube = torch.tensor([[0, 0, 0], [1, 2, 2], [0.5, 0.5, 0.5]], dtype=torch.float64)
    assert tau_from_extent(cube) == pytest.approx(0.03)
    assert tau_from_extent(cube, ratio=0.5) == pytest.approx(1.5)


# --- alignment for evaluation --------------------------------------------------------------------


def _anchor_scene():
    """A camera looking at a tilted plane: GT depth, GT world points, and a far-away reconstruction."""
    c2w = look_at(_vec(0.3, -0.2, -1.0), _vec(0.0, 0.0, 3.0), _vec(0.0, -1.0, 0.0))
    camera = Camera.from_fov(c2w[None], 24, 32, 60.0)
    ys, xs = torch.meshgrid(
        torch.linspace(0, 1, 24, dtype=torch.float64), torch.linspace(0, 1, 32, dtype=torch.float64), indexing="ij"
    )
    depth = 3.0 + 0.8 * xs - 0.5 * ys + 0.2 * torch.sin(6 * xs * ys)
    gt_points = camera.backproject(depth[None])[0]
    sim = _random_sim3(11, 2.3)
    s, R, t = sim
    rec_points = ((gt_points - t) @ R) / s  # sim^-1: the reconstruction lives in its own frame
    return camera, depth, gt_points, rec_points, sim


def test_anchor_alignment_recovers_similarity_and_skips_invalid_pixels():
    camera, depth, gt_points, rec_points, _ = _anchor_scene()
    depth, rec_points = depth.clone(), rec_points.clone()
    depth[0, :5] = 0.0
    rec_points[3, 3] = float("nan")
    rec_points[5, 7] = 1e6  # masked out below
    valid = torch.ones(24, 32, dtype=torch.bool)
    valid[5, 7] = False
    sim = anchor_alignment(rec_points, depth, camera, valid)
    keep = valid & (depth > 0) & torch.isfinite(rec_points).all(-1)
    assert torch.allclose(sim.apply(rec_points[keep]), gt_points[keep], atol=1e-8)
    with pytest.raises(InvalidInputError):
        anchor_alignment(rec_points[:, :-1], depth, camera)
    with pytest.raises(InvalidInputError):
        anchor_alignment(rec_points, torch.zeros_like(depth), camera)


def test_robust_anchor_alignment_ignores_outlier_pixels():
    camera, depth, gt_points, rec_points, _ = _anchor_scene()
    outliers = torch.rand(24, 32, generator=torch.Generator().manual_seed(9)) < 0.25
    corrupted = rec_points.clone()
    corrupted[outliers] += 3.0
    plain = anchor_alignment(corrupted, depth, camera)
    robust = anchor_alignment(corrupted, depth, camera, robust=True)
    inliers = ~outliers
    assert (plain.apply(corrupted[inliers]) - gt_points[inliers]).norm(dim=-1).max() > 0.1
    assert torch.allclose(robust.apply(corrupted[inliers]), gt_points[inliers], atol=1e-6)


def test_f1_after_anchor_alignment_is_invariant_to_global_sim3():
    camera, depth, gt_points, rec_points, _ = _anchor_scene()
    gt_cloud = gt_points.reshape(-1, 3)
    noise = 0.01 * torch.randn(gt_cloud.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    noisy = gt_cloud + noise
    reference = point_cloud_scores(noisy, gt_cloud, tau=0.015)
    assert 0.2 < reference.f1 < 0.95
    aligned = []
    for seed, scale in ((21, 0.2), (22, 6.0)):
        moved = _apply_points(_random_sim3(seed, scale), noisy)
        sim = anchor_alignment(moved.reshape(24, 32, 3), depth, camera)
        aligned.append(point_cloud_scores(sim.apply(moved), gt_cloud, tau=0.015))
    first, second = aligned
    assert (second.f1, second.auc) == pytest.approx((first.f1, first.auc), abs=1e-9)
    assert first.f1 == pytest.approx(reference.f1, abs=0.005)  # the anchor fit on noisy points is near identity
    assert first.auc == pytest.approx(reference.auc, abs=0.002)


def test_first_camera_alignment_maps_first_camera_exactly():
    gt = _orbit(6)
    sim = _random_sim3(8, 1.9)
    rec = _apply_c2w(sim, gt)
    aligned = first_camera_alignment(rec, gt, scale=1 / 1.9)
    back = aligned.apply_c2w(rec)
    assert torch.allclose(back[0], gt[0], atol=1e-10)
    assert torch.allclose(back, gt, atol=1e-9)  # with the right scale the whole trajectory returns


@pytest.mark.parametrize("initial_scale", [None, 1.5])
def test_first_camera_icp_alignment_refines_scale(initial_scale):
    gt_cloud = _box_cloud(4000, seed=1)
    gt_c2w = _orbit(4)
    s_true = 1.6
    to_rec = (1 / s_true, _rotation([0.2, -0.4, 0.3]), _vec(0.5, -1.0, 2.0))
    rec_cloud = _apply_points(to_rec, gt_cloud)[torch.randperm(4000, generator=torch.Generator().manual_seed(0))]
    rec_c2w = _apply_c2w(to_rec, gt_c2w)
    sim = first_camera_icp_alignment(
        rec_cloud, gt_cloud, rec_c2w, gt_c2w, max_distance=0.5, initial_scale=initial_scale
    )
    assert float(sim.scale) == pytest.approx(s_true, rel=1e-3)
    assert point_cloud_scores(sim.apply(rec_cloud), gt_cloud, tau=0.01).f1 > 0.99


# --- retrieval metrics ---------------------------------------------------------------------------


def test_fov_overlap_score_and_sources_hand_example():
    orbit_scores = torch.tensor([[0.2, 0.8, 0.1], [0.5, 0.4, 0.3]])
    orbit = TrajectoryRetrieval("orbit", orbit_scores, ("panorama", "input", "panorama"))
    assert fov_overlap_score(orbit) == pytest.approx(65.0)  # mean(0.8, 0.5) x 100
    up_scores = torch.tensor([[0.1, 0.3, 0.9, 0.2], [0.7, 0.1, 0.6, 0.2], [0.0, 0.0, 0.2, 0.4]])
    up = TrajectoryRetrieval("up", up_scores, ("panorama", "panorama", "orbit", "orbit"))
    summary = summarize_retrieval([orbit, up])
    assert summary.per_trajectory == pytest.approx({"orbit": 65.0, "up": 200 / 3})
    assert summary.total == pytest.approx(65.0 + 200 / 3)
    # references: input, panorama | orbit, panorama, orbit -> 3 of 5 from the initial memory
    assert (summary.initial_share, summary.generated_share) == pytest.approx((0.6, 0.4))


def test_fov_overlap_score_of_frustum_scores():
    """Targets identical to memory frames retrieve them with overlap 1 (score 100); a target behind and
    facing away from every memory frame scores 0."""
    from worldstereo.memory.retrieval import frustum_overlap_scores

    memory = Camera.from_fov(_orbit(6), 24, 32, 70.0)
    sources = ("panorama",) * 3 + ("up",) * 3
    identical = TrajectoryRetrieval("orbit", frustum_overlap_scores(memory[::2], memory), sources)
    assert fov_overlap_score(identical) == pytest.approx(100.0, abs=1e-6)
    assert identical.references().tolist() == [0, 2, 4]
    away_c2w = look_at(_vec(0.0, 0.0, -11.0), _vec(0.0, 0.0, -20.0), _vec(0.0, -1.0, 0.0))
    away = Camera.from_fov(away_c2w[None], 24, 32, 70.0)
    facing_away = TrajectoryRetrieval("up", frustum_overlap_scores(away, memory), sources)
    assert fov_overlap_score(facing_away) == pytest.approx(0.0, abs=1e-9)


def test_retrieval_metrics_with_chosen_references_and_empty_memory():
    scores = torch.tensor([[0.2, 0.8], [0.5, 0.4]])
    chosen = TrajectoryRetrieval("left", scores, ("panorama", "right"), chosen=torch.tensor([0, 0]))
    assert fov_overlap_score(chosen) == pytest.approx(35.0)
    empty = TrajectoryRetrieval("right", torch.empty(3, 0), ())
    assert fov_overlap_score(empty) == 0.0
    summary = summarize_retrieval([empty, chosen])
    assert summary.per_trajectory == pytest.approx({"right": 0.0, "left": 35.0})
    assert (summary.initial_share, summary.generated_share) == (1.0, 0.0)
    with pytest.raises(InvalidInputError):
        TrajectoryRetrieval("bad", scores, ("panorama",))
    with pytest.raises(InvalidInputError):
        summarize_retrieval([chosen, chosen])
