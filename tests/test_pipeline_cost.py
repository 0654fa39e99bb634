"""The fast paths of the per-trajectory steps and the export writers give the results of their definitions."""

from __future__ import annotations

import io
import math

import numpy as np
import open3d as o3d
import pytest
import torch

from worldstereo.bench.pipeline import format_report, run_pipeline_benchmark
from worldstereo.bench.render import benchmark_scene
from worldstereo.errors import InvalidInputError
from worldstereo.geometry.camera import Camera, look_at
from worldstereo.geometry.holefill import push_pull_fill
from worldstereo.geometry.plucker import normalize_cameras, plucker_rays
from worldstereo.geometry.ply import ply_bytes as write_ply
from worldstereo.geometry.ply import read_ply
from worldstereo.geometry.render import render_points
from worldstereo.geometry.voxel import merge_clouds, new_voxel_indices, voxel_downsample
from worldstereo.memory.cache import Cache3D
from worldstereo.memory.pointmap import pointmap_pairs
from worldstereo.pipeline.exports import colmap_text, ply_bytes, point_decimals


def orbit(n: int = 6, height: int = 30, width: int = 48) -> Camera:
    angles = torch.linspace(0, math.pi / 2, n, dtype=torch.float64)
    eyes = torch.stack([3 * angles.sin(), 0.4 * angles, -3 * angles.cos()], dim=-1) + torch.tensor([0.5, -1.0, 2.0])
    target = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64).expand(n, 3)
    return Camera.from_fov(look_at(eyes, target, torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64)), height, width, 65.0)


def plucker_definition(camera: Camera) -> torch.Tensor:
    """``[d, o x d]`` per pixel from unit ray directions and camera centres, in float64."""
    camera = camera.to(dtype=torch.float64)
    camera = Camera(camera.K, normalize_cameras(camera.c2w), camera.height, camera.width)
    directions = torch.nn.functional.normalize(camera.ray_directions(), dim=-1)
    moments = torch.linalg.cross(camera.centers[:, None, None].expand_as(directions), directions, dim=-1)
    return torch.cat([directions, moments], dim=-1).permute(0, 3, 1, 2)


@pytest.mark.parametrize("chunk", [1, 4, 8])
def test_float32_plucker_rays_match_the_float64_definition(chunk: int) -> None:
    cameras = orbit(7)
    rays = plucker_rays(cameras.to(dtype=torch.float32), chunk_frames=chunk)
    assert rays.dtype == torch.float32 and rays.shape == (7, 6, 30, 48) and rays.is_contiguous()
    assert (rays.double() - plucker_definition(cameras)).abs().max() < 1e-5
    assert (plucker_rays(cameras) - plucker_definition(cameras)).abs().max() < 1e-12


def test_release_plucker_rays_are_their_float64_values_rounded_once() -> None:
    from worldstereo.models.release.camera import normalize_cameras as release_normalize
    from worldstereo.models.release.camera import release_plucker

    cameras = orbit(5, 40, 72).to(dtype=torch.float32)
    w2c = release_normalize(cameras.w2c)
    rays = release_plucker(w2c, cameras.K, 40, 72)
    c2w, k_inv = torch.inverse(w2c).double(), cameras.K.inverse().double()  # the release inverts in float32
    rows = torch.arange(40, dtype=torch.float64) + 0.5
    ys, xs = torch.meshgrid(rows, torch.arange(72, dtype=torch.float64) - 0.5, indexing="ij")
    pixels = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)
    d = torch.nn.functional.normalize(torch.einsum("nij,njk,hwk->nhwi", c2w[:, :3, :3], k_inv, pixels), dim=-1)
    moments = torch.linalg.cross(c2w[:, None, None, :3, 3].expand_as(d), d, dim=-1)
    definition = torch.cat([d, moments], dim=-1).permute(0, 3, 1, 2)
    assert rays.dtype == torch.float32 and rays.shape == (5, 6, 40, 72)
    assert ((rays.double() - definition).abs() <= definition.abs() * (2**-24 + 1e-12) + 1e-15).all()  # half an ulp
    condition = torch.zeros(1, 7, 5, 40, 72)
    release_plucker(w2c, cameras.K, 40, 72, out=condition[0, 1:].transpose(0, 1))  # written through a view
    assert torch.equal(condition[0, 1:].transpose(0, 1), rays) and not condition[0, 0].any()
    broken = w2c.clone()
    broken[2, 0, 3] = torch.nan
    assert torch.equal(release_plucker(broken, cameras.K, 40, 72), torch.zeros_like(rays))  # as released: all zeros


def test_new_voxel_indices_equal_thinning_the_union() -> None:
    g = torch.Generator().manual_seed(0)
    for voxel in (0.05, 0.2):
        existing = voxel_downsample(*(torch.rand(3000, 3, generator=g, dtype=torch.float64) * 2,) * 2, voxel)[0]
        new = torch.cat([existing[:500] + 0.01, torch.rand(4000, 3, generator=g, dtype=torch.float64) * 3 - 0.5])
        union = voxel_downsample(torch.cat([existing, new]), torch.cat([existing, new]), voxel)[0]
        kept = new_voxel_indices(existing, new, voxel)
        assert torch.equal(kept, kept.sort().values) and torch.equal(torch.cat([existing, new[kept]]), union)
        assert torch.equal(merge_clouds((existing, existing), (new, new), voxel)[0], union)
    assert len(new_voxel_indices(existing, new[:0], 0.1)) == 0
    assert torch.equal(new_voxel_indices(existing[:0], new, 0.1), voxel_downsample(new, new, 0.1)[2])
    with pytest.raises(InvalidInputError):
        new_voxel_indices(existing, new, 0.0)
    far = torch.tensor([[1e14, 0.0, 0.0]], dtype=torch.float64)  # 1e17 cells from the origin: a box too big to pack
    assert torch.equal(new_voxel_indices(existing, far, 1e-3), torch.tensor([0]))
    assert len(new_voxel_indices(torch.cat([existing, far]), far + 1e-4, 1e-3)) == 0  # the same voxel, held
    far_off = voxel_downsample(*(existing + 1e6,) * 2, voxel)[0]  # far from the origin, cells are still exact
    moved = new + 1e6
    union = voxel_downsample(torch.cat([far_off, moved]), torch.cat([far_off, moved]), voxel)[0]
    assert torch.equal(torch.cat([far_off, moved[new_voxel_indices(far_off, moved, voxel)]]), union)


def first_of_each_voxel(points: torch.Tensor, voxel: float) -> torch.Tensor:
    """Reference: ascending index of the first point in each voxel (unique rows of the integer cells)."""
    cells = torch.floor(points / voxel).long()
    _, inverse = torch.unique(cells, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(points)).scatter_reduce_(0, inverse, torch.arange(len(points)), "amin")
    return first.sort().values


def test_a_cloud_over_10_km_merges_at_1_cm_without_losing_points() -> None:
    g = torch.Generator().manual_seed(3)
    near = torch.rand(20_000, 3, generator=g, dtype=torch.float64) * 2  # a subject 2 m across ...
    far = (torch.rand(20_000, 3, generator=g, dtype=torch.float64) * 2 - 1) * 1e4  # ... and 10 km of far depth
    cloud = torch.cat([near, far, near[:500] + 1e-3])  # the last rows fall into voxels already held
    thinned, _, kept = voxel_downsample(cloud, cloud, 0.01)
    assert torch.equal(kept, first_of_each_voxel(cloud, 0.01)) and len(thinned) == len(kept) >= 40_000 - 1
    existing, new = thinned[:25_000], torch.cat([thinned[25_000:], cloud[-500:]])
    merged = torch.cat([existing, new[new_voxel_indices(existing, new, 0.01)]])
    assert torch.equal(merged, thinned)  # exact: every voxel once, none lost


def test_cache_update_keeps_the_cloud_of_the_union_and_tags_sources() -> None:
    points, colors, _ = benchmark_scene(20_000, 1, 48, 64)
    cache = Cache3D.from_points(points.double(), colors, 0.05)
    moved = points.double() + torch.tensor([0.03, 0.0, 0.0], dtype=torch.float64)
    before = cache.points.clone()
    report = cache.update(moved, colors, "orbit", align="none")
    union = voxel_downsample(torch.cat([before, moved]), torch.cat([before, moved]), 0.05)[0]
    assert torch.equal(cache.points, union) and report.points_added == len(union) - len(before) > 0
    assert int(cache.points_from("orbit").sum()) == report.points_added


def test_one_render_pass_gives_the_colour_and_xyz_renders() -> None:
    points, colors, cameras = benchmark_scene(30_000, 5, 40, 64)
    cache = Cache3D.from_points(points, colors, 0.01)
    colour, xyz = cache.render_with_xyz(cameras, radius=1)
    alone = cache.render(cameras, radius=1)
    assert torch.equal(colour.rgb, alone.rgb) and torch.equal(colour.mask, alone.mask)
    assert torch.equal(xyz.rgb, render_points(cache.points, cache.points, cameras, radius=1).rgb)


def test_pointmaps_from_a_given_target_render_and_repeated_references() -> None:
    points, _, cameras = benchmark_scene(1500, 6, 40, 64)  # sparse: no two points compete for a pixel
    targets, references = cameras[torch.tensor([0, 2, 4])], cameras[torch.tensor([1, 1, 5])]
    plain = pointmap_pairs(points, targets, references, radius=0)
    given = pointmap_pairs(points, targets, references, radius=0,
                           target_xyz=render_points(points, points, targets, radius=0))
    for a, b in zip(plain, given):
        assert torch.equal(a, b)
    for i in range(3):  # the repeated reference is rendered once, as if each pair were alone
        single = pointmap_pairs(points, targets[i], references[i], radius=0)
        assert torch.equal(single.target[0], plain.target[i]) and torch.equal(single.reference[0], plain.reference[i])


def test_cache_ply_reads_back_exactly_and_opens_in_open3d(tmp_path) -> None:
    points, colors, _ = benchmark_scene(5_000, 1, 48, 64)
    cache = Cache3D.from_points(points.double(), colors, 0.01)
    cache.update(points.double() + 1.0, colors, "orbit", align="none")
    cache.save(tmp_path / "cache")
    restored = Cache3D.load(tmp_path / "cache")
    assert restored.points.dtype == torch.float64 and torch.equal(restored.points, cache.points)
    assert torch.equal(restored.colors, cache.colors) and torch.equal(restored.sources, cache.sources)
    cloud = o3d.t.io.read_point_cloud(str(tmp_path / "cache" / "cache.ply"))
    assert np.array_equal(cloud.point.positions.numpy(), cache.points.numpy())
    assert np.array_equal(cloud.point.source.numpy()[:, 0], cache.sources.numpy())
    with pytest.raises(InvalidInputError):
        read_ply(b"ply\nformat ascii 1.0\nend_header\n")
    with pytest.raises(InvalidInputError):
        write_ply({"x": np.zeros(2), "y": np.zeros(3)})


def test_fused_ply_has_open3d_layout_and_values(tmp_path) -> None:
    g = torch.Generator().manual_seed(1)
    points, colors = torch.randn(2000, 3, generator=g, dtype=torch.float64), torch.rand(2000, 3, generator=g)
    colors[:3] = torch.tensor([[0.0, 1.0, 1.5], [-0.2, 0.5 / 255, 254.5 / 255], [1 / 510, 0.2, 0.8]])
    data = ply_bytes(points, colors)
    legacy = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.numpy()))
    legacy.colors = o3d.utility.Vector3dVector(colors.double().clamp(0, 1).numpy())
    o3d.io.write_point_cloud(str(tmp_path / "o3d.ply"), legacy, write_ascii=False)
    reference = (tmp_path / "o3d.ply").read_bytes()
    body = lambda blob: blob[blob.index(b"end_header\n"):]  # noqa: E731
    assert body(data) == body(reference)
    (tmp_path / "ours.ply").write_bytes(data)
    cloud = o3d.io.read_point_cloud(str(tmp_path / "ours.ply"))
    assert np.array_equal(np.asarray(cloud.points), points.numpy())


def test_colmap_points_parse_back_at_float32_resolution() -> None:
    g = torch.Generator().manual_seed(2)
    points, colors = torch.randn(3000, 3, generator=g, dtype=torch.float64) * 40, torch.rand(3000, 3, generator=g)
    points[0] = torch.tensor([-1e-9, 0.0, 2.5])
    cameras = orbit(2)
    text = colmap_text(cameras, ["a.jpg", "b.jpg"], points, colors)["points3D.txt"].decode("ascii")
    lines = text.splitlines()
    assert lines[0].startswith("# 3D point list") and text.endswith("\n")
    largest = points.abs().max().item()
    decimals = point_decimals(largest)
    assert 10.0 ** -decimals <= largest * 2.0 ** -24 < 10.0 ** (1 - decimals)  # float32's spacing at the largest
    assert lines[2].split()[1:4] == ["0." + "0" * decimals, "0." + "0" * decimals, "2.5" + "0" * (decimals - 1)]
    rows = np.loadtxt(io.StringIO(text), comments="#")
    assert rows.shape == (3000, 8) and np.array_equal(rows[:, 0], np.arange(1, 3001))
    assert np.abs(rows[:, 1:4] - points.numpy()).max() <= 0.5 * 10.0 ** -decimals * (1 + 1e-9)
    assert np.array_equal(rows[:, 4:7], (colors * 255).round().numpy()) and not rows[:, 7].any()


@pytest.mark.parametrize(("largest", "decimals"), [(0.0, 0), (1.0, 8), (40.0, 6), (3e7, 0), (1e-12, 17)])
def test_point_decimals_follow_float32_resolution(largest: float, decimals: int) -> None:
    assert point_decimals(largest) == decimals
    with pytest.raises(ValueError, match="coordinate reaches"):
        point_decimals(2e15)


def test_push_pull_fill_of_stacked_channels_equals_each_alone() -> None:
    g = torch.Generator().manual_seed(3)
    values, valid = torch.rand(3, 4, 37, 50, generator=g), torch.rand(3, 37, 50, generator=g) > 0.6
    both = push_pull_fill(values, valid)
    assert torch.allclose(both[:, :3], push_pull_fill(values[:, :3], valid), atol=1e-6)
    assert torch.allclose(both[:, 3:], push_pull_fill(values[:, 3:], valid), atol=1e-6)
    assert torch.equal(both[valid[:, None].expand_as(both)], values[valid[:, None].expand_as(values)])


@pytest.mark.parametrize(("pointmaps", "repeats"), [(True, 1), (False, 3)])
def test_pipeline_benchmark_reports_every_step(pointmaps: bool, repeats: int) -> None:
    result = run_pipeline_benchmark(frames=5, scale=0.125, pointmaps=pointmaps, repeats=repeats)
    assert [t["name"] for t in result["trajectories"]] == ["orbit", "up", "right", "left"]
    for trajectory in result["trajectories"]:
        assert sum(trajectory["steps"].values()) - trajectory["steps"]["generate"] == pytest.approx(trajectory["seconds"])
        assert all(trajectory["steps"][key] > 0 for key in ("ggm_render", "snapshot_save"))
        assert (trajectory["steps"]["pointmaps"] > 0) == pointmaps  # built only for a generator that reads them
    sizes = [result["init_cache_points"]] + [t["cache_points"] for t in result["trajectories"]]
    assert sizes == sorted(sizes) and result["fused_points"] == sizes[-1]
    assert result["per_trajectory_s"] > 0 and result["export_s"] > 0
    assert len(result["runs"]) == repeats
    assert result["per_trajectory_s"] == sorted(run["per_trajectory_s"] for run in result["runs"])[(repeats - 1) // 2]
    assert result["export_s"] == sorted(run["export_s"] for run in result["runs"])[(repeats - 1) // 2]
    assert "per_trajectory_s" in format_report(result) and ("3 runs (medians above)" in format_report(result)) == (repeats == 3)


def test_release_path_reports_network_calls_apart() -> None:
    result = run_pipeline_benchmark(frames=21, scale=0.125, path="release")
    assert result["path"] == "release" and [t["clip_frames"] for t in result["trajectories"]] == [21] * 4
    for trajectory in result["trajectories"]:
        steps = trajectory["steps"]
        assert trajectory["network_s"] > 0 and steps["reconstruct"] >= trajectory["network_s"]
        assert trajectory["seconds"] == pytest.approx(sum(steps.values()) - trajectory["network_s"])
        assert steps["generate"] > 0 and steps["pointmaps"] == 0
    assert result["network_cpu_s"] > 0 and result["steps_mean_cpu_s"]["generate"] > 0
    assert result["process_cpu_s"] > result["per_trajectory_cpu_s"] * len(result["trajectories"])
    sizes = [result["init_cache_points"]] + [t["cache_points"] for t in result["trajectories"]]
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]  # the tiny network's depth reaches the cache
    report = format_report(result)
    assert "release path" in report and "network" in report and "total (-net)" in report
    with pytest.raises(ValueError, match="pointmaps"):
        run_pipeline_benchmark(frames=21, path="release", pointmaps=True)


def test_release_stand_in_builds_the_network_conditions(tmp_path) -> None:
    from scene_requests import scene_request

    from worldstereo.bench.release_path import release_generator
    from worldstereo.config import Settings
    from worldstereo.models.release.model import camera_conditions
    from worldstereo.pipeline.generators.worldstereo import bucket_size, keyframe_clip

    request = scene_request(tmp_path, frames=5)
    generator = release_generator(Settings(device="cpu"), tmp_path / "embeddings.safetensors")
    video = generator.generate(request)
    assert video.frames.shape == request.ggm.rgb.shape and video.depth is None
    size = bucket_size(*request.image.shape[:2], generator.model.config.scale_map, 16)
    clip = keyframe_clip(request, size, 8, memory=True)
    condition, (targets, refs) = camera_conditions(clip, torch.device("cpu"))
    assert condition.shape == (1, 7, 5, *size) and targets.shape == (5, 7) and refs.shape[1] == 7
    assert torch.equal(condition[0, 0, 0], torch.zeros(size)) and torch.isfinite(condition).all()
