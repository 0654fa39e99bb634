import math

import pytest
import torch

from worldstereo.config import TrajectorySettings
from worldstereo.errors import InvalidInputError
from worldstereo.geometry.align import Sim3, rotation_angle_deg
from worldstereo.geometry.render import depth_edge_mask
from worldstereo.geometry.trajectory import plan_trajectories
from worldstereo.memory.cache import Cache3D, overlap_correspondences
from worldstereo.synthetic.scenes import make_scene

F64 = dict(dtype=torch.float64)
VOXEL = 0.1


def _known_sim3() -> Sim3:
    axis = torch.nn.functional.normalize(torch.tensor([0.3, -0.5, 0.8], **F64), dim=0)
    angle = math.radians(35.0)
    cross = torch.tensor([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]], **F64)
    R = torch.eye(3, **F64) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross
    return Sim3(torch.tensor(0.6, **F64), R, torch.tensor([0.4, -1.3, 2.2], **F64))


@pytest.fixture(scope="module")
def object_scene():
    return make_scene("object", 0)


@pytest.fixture(scope="module")
def surface(object_scene):
    return object_scene.surface_points(50_000, seed=0)


@pytest.fixture(scope="module")
def room_views():
    """The room's input view and three cameras of its right arc, with exact RGB and depth."""
    scene = make_scene("room", 0)
    camera = scene.input_camera(72, 96)
    truth = scene.render(camera)
    median = float(truth.depth[torch.isfinite(truth.depth)].median())
    (right,) = plan_trajectories(camera, median, TrajectorySettings(order=("right",), num_frames=9, right_deg=30.0))
    views = right.cameras[torch.tensor([2, 4, 6])]
    return camera, truth, views, scene.render(views)


def test_merging_the_same_surface_keeps_the_cache_bounded(object_scene, surface):
    points, colors = surface
    cache = Cache3D.from_points(points, colors, VOXEL)
    once = len(cache)
    assert 0 < once < len(points)
    for _ in range(3):
        report = cache.update(points, colors, "same", align="none")
        assert report.points_added == 0
    assert len(cache) == once
    cache.update(*object_scene.surface_points(50_000, seed=1), "resampled", align="none")  # a fresh sample
    assert once <= len(cache) <= 1.05 * once
    report = cache.update(points + 100.0, colors, "elsewhere", align="none")
    assert report.points_added == once and len(cache) > 2 * once  # new space is added in full


def test_update_realigns_a_known_sim3_copy(surface):
    points, colors = surface
    points = points + torch.tensor([0.013, 0.027, 0.051], **F64)  # keep planes off voxel boundaries
    cache = Cache3D.from_points(points, colors, VOXEL)
    known = _known_sim3()
    part = cache.points[cache.points[:, 0] > cache.points[:, 0].median()]  # half of the cache ...
    beyond = points[:2000] + torch.tensor([0.0, 0.0, 30.0], **F64)  # ... plus unseen space
    reconstruction = known.apply(torch.cat([part, beyond]))
    report = cache.update(
        reconstruction, torch.zeros_like(reconstruction), "aligned", anchor_src=known.apply(part), anchor_dst=part
    )
    inverse = known.inverse()
    assert report.transform.scale.item() == pytest.approx(inverse.scale.item(), rel=1e-9)
    assert rotation_angle_deg(report.transform.R, inverse.R).item() < 1e-6
    assert report.rmse < 1e-9 and report.inliers == report.correspondences == len(part)
    added = cache.points[cache.points_from("aligned")]
    assert len(added) == report.points_added > 0
    exact = "donot_use_mm_for_euclid_dist"
    assert torch.cdist(added, beyond, compute_mode=exact).amin(dim=1).max() < 1e-9  # new points land where they belong


def test_robust_update_ignores_outlier_anchors(surface):
    points, colors = surface
    cache = Cache3D.from_points(points, colors, VOXEL)
    known = _known_sim3()
    anchors = cache.points[::7]
    src = known.apply(anchors)
    outliers = torch.rand(len(src), generator=torch.Generator().manual_seed(0)) < 0.3
    src[outliers] += 2.0 * torch.randn(int(outliers.sum()), 3, **F64, generator=torch.Generator().manual_seed(1))
    plain = Cache3D.from_points(points, colors, VOXEL).update(src, torch.zeros_like(src), "plain", anchor_src=src, anchor_dst=anchors)
    robust = cache.update(src, torch.zeros_like(src), "robust", anchor_src=src, anchor_dst=anchors, align="robust")
    inverse = known.inverse()
    assert rotation_angle_deg(robust.transform.R, inverse.R).item() < 1e-6
    assert robust.transform.scale.item() == pytest.approx(inverse.scale.item(), rel=1e-9)
    assert robust.inliers == int((~outliers).sum())
    assert rotation_angle_deg(plain.transform.R, inverse.R).item() > 1.0  # least squares alone is pulled off


def test_overlap_correspondences_align_a_relative_scale_reconstruction(room_views):
    camera, truth, views, rendered = room_views
    cache = Cache3D.from_depth(truth.rgb[0], truth.depth[0], camera)
    # a reconstruction of the new views in its own frame (relative scale), as a feed-forward model returns it
    known = _known_sim3()
    valid = torch.isfinite(rendered.depth)
    world = views.backproject(torch.where(valid, rendered.depth, torch.zeros_like(rendered.depth)))
    local = known.apply(world)
    src, dst = overlap_correspondences(cache, local, views, valid)
    assert len(src) > 1000
    report = cache.update(local[valid], rendered.rgb[valid], "right", anchor_src=src, anchor_dst=dst, align="robust")
    inverse = known.inverse()
    assert report.transform.scale.item() == pytest.approx(inverse.scale.item(), rel=0.005)
    assert rotation_angle_deg(report.transform.R, inverse.R).item() < 0.1
    aligned = report.transform.apply(local[valid])
    footprint = float(truth.depth[0][torch.isfinite(truth.depth[0])].median() / camera.K[0, 0, 0])  # pixel size at median depth
    assert (aligned - world[valid]).norm(dim=-1).median() < 0.1 * footprint
    assert report.inliers > 0.95 * report.correspondences and report.rmse < footprint
    assert report.points_added > 0 and cache.points_from("right").sum() == report.points_added


def test_overlap_correspondences_subsample_and_validate(room_views):
    camera, truth, views, rendered = room_views
    cache = Cache3D.from_depth(truth.rgb[0], truth.depth[0], camera)
    valid = torch.isfinite(rendered.depth)
    world = views.backproject(torch.where(valid, rendered.depth, torch.zeros_like(rendered.depth)))
    src, dst = overlap_correspondences(cache, world, views, valid, max_pairs=500)
    assert src.shape == dst.shape == (500, 3)
    # each pair is the exact surface point of a pixel and a cache point projecting into the same pixel
    footprint = float(truth.depth[0][torch.isfinite(truth.depth[0])].median() / camera.K[0, 0, 0])
    assert (src - dst).norm(dim=-1).median() < footprint
    with pytest.raises(InvalidInputError):
        overlap_correspondences(cache, world[:2], views, valid)


def test_from_depth_backprojects_the_input_view(room_views):
    camera, truth, _, _ = room_views
    depth = truth.depth[0]
    cache = Cache3D.from_depth(truth.rgb[0], depth, camera, drop_edges=False)
    assert cache.voxel_size == pytest.approx(0.002 * float(depth.median()))
    assert cache.names == ["input"] and (cache.sources == 0).all()
    uv, z = camera.project(cache.points)
    col, row = uv[0, :, 0].floor().long(), uv[0, :, 1].floor().long()
    assert torch.allclose(z[0], depth[row, col], rtol=1e-9)  # Eq. 1 and its inverse agree
    assert torch.equal(cache.colors, truth.rgb[0][row, col])
    rendered = cache.render(camera, radius=0)  # each point back in its own pixel
    covered = rendered.covered[0]
    assert covered.float().mean() > 0.95
    assert ((rendered.depth[0][covered] - depth[covered]).abs() / depth[covered]).max() < 1e-6
    assert torch.equal(rendered.rgb[0][covered], truth.rgb[0][covered])
    edges = depth_edge_mask(depth[None])[0]
    trimmed = Cache3D.from_depth(truth.rgb[0], depth, camera)
    uv, _ = camera.project(trimmed.points)
    assert not edges[uv[0, :, 1].floor().long(), uv[0, :, 0].floor().long()].any()
    assert len(trimmed) <= int((~edges).sum()) < len(cache)


def test_save_and_load_round_trip_exactly(tmp_path, surface):
    points, colors = surface
    cache = Cache3D.from_points(points.to(torch.float32), colors, VOXEL)
    report = cache.update(points[:500] + 50.0, colors[:500], "orbit", align="none")
    files = cache.save(tmp_path / "cache")
    assert sorted(p.name for p in files) == ["cache.json", "cache.ply"]
    restored = Cache3D.load(tmp_path / "cache")
    assert restored.points.dtype == torch.float32 and torch.equal(restored.points, cache.points)
    assert torch.equal(restored.colors, cache.colors) and torch.equal(restored.sources, cache.sources)
    assert restored.names == ["input", "orbit"] and restored.voxel_size == cache.voxel_size
    assert int(restored.points_from("orbit").sum()) == report.points_added > 400


def test_cache_rejects_bad_input(surface):
    points, colors = surface
    with pytest.raises(InvalidInputError):
        Cache3D.from_points(points[:0], colors[:0], VOXEL)
    cache = Cache3D.from_points(points, colors, VOXEL)
    with pytest.raises(InvalidInputError):
        cache.update(points, colors, "up")  # sim3 alignment without anchors
    with pytest.raises(InvalidInputError):
        cache.update(points, colors, "", align="none")
    with pytest.raises(InvalidInputError):
        Cache3D.from_depth(colors[:4].reshape(2, 2, 3), torch.full((2, 2), math.inf), make_scene("room", 0).input_camera(2, 2))
