"""3D cache renderer, far-depth compression, depth edges and voxel merging on ground truth."""

from __future__ import annotations

import pytest
import torch

from worldstereo.bench.render import format_report, run_render_benchmark
from worldstereo.errors import InvalidInputError
from worldstereo.geometry.camera import Camera, look_at
from worldstereo.geometry.render import (
    compress_far_depth,
    depth_edge_mask,
    render_points,
    render_points_naive,
    splat_offsets,
)
from worldstereo.geometry.voxel import merge_clouds, voxel_downsample

F64 = torch.float64


def scene_depth(rays: torch.Tensor) -> torch.Tensor:
    """z-depth along camera rays with unit z: a tilted plane behind a sphere (analytic ray casting)."""
    plane = 6.0 / (1.0 - 0.25 * rays[..., 0])  # z = 6 + 0.25 x
    center, radius = torch.tensor([0.4, -0.2, 3.5], dtype=rays.dtype), 1.0
    b = -2 * (rays @ center)
    a = (rays * rays).sum(-1)
    disc = b * b - 4 * a * (center @ center - radius**2)
    sphere = torch.where(disc > 0, (-b - disc.clamp_min(0).sqrt()) / (2 * a), torch.inf)
    return torch.minimum(plane, sphere)


def reference_camera(h: int = 48, w: int = 64) -> Camera:
    return Camera.from_fov(torch.eye(4, dtype=F64), h, w, 60.0)


def test_dense_surface_renders_its_own_depth() -> None:
    camera = reference_camera(96, 128)
    dense = camera.resized(3 * camera.height, 3 * camera.width)  # 9 samples per pixel
    rays = dense.ray_directions()[0]
    points = (rays * scene_depth(rays)[..., None]).reshape(-1, 3)
    colors = torch.rand(points.shape[0], 3, generator=torch.Generator().manual_seed(0))

    out = render_points(points.float(), colors, camera, radius=0)
    truth = scene_depth(camera.ray_directions()[0])
    covered = out.covered[0]
    assert covered.float().mean() >= 0.95
    relative = (out.depth[0].double() - truth).abs() / truth
    assert (relative[covered] <= 0.01).float().mean() >= 0.95
    assert bool((out.depth[0][~covered] == 0).all()) and bool((out.rgb[0][~covered] == 0).all())


def test_nearest_point_wins_whatever_the_order() -> None:
    camera = reference_camera(8, 8)
    ray = camera.ray_directions()[0, 3, 5]
    near, far = (ray * 2.0)[None], (ray * 3.0)[None]
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    for points, winner in ((torch.cat([near, far]), 0), (torch.cat([far, near]), 1)):
        out = render_points(points.float(), colors, camera, radius=0)
        assert out.mask[0].sum() == 63 and not out.mask[0, 3, 5]
        assert torch.equal(out.rgb[0, 3, 5], colors[winner])
        assert out.depth[0, 3, 5].item() == pytest.approx(2.0, rel=1e-6)


def test_near_plane_and_points_behind_the_camera() -> None:
    camera = reference_camera(8, 8)
    ray = camera.ray_directions()[0, 4, 4]
    points = torch.stack([ray * 0.05, ray * 4.0, -ray * 1.0, ray * 1e-4]).float()  # 1e-4 is in front of near
    colors = torch.arange(4.0)[:, None]
    out = render_points(points, colors, camera, radius=0, near=0.1)
    assert out.mask[0].sum() == 63
    assert out.rgb[0, 4, 4].item() == 1.0  # the in-front-of-near points neither draw nor occlude
    assert out.depth[0, 4, 4].item() == pytest.approx(4.0, rel=1e-6)


@pytest.mark.parametrize(("footprint", "count"), [("square", 9), ("disc", 5)])
def test_splat_footprint_reaches_in_from_outside_the_image(footprint: str, count: int) -> None:
    camera = reference_camera(6, 6)
    assert len(splat_offsets(1, footprint)) == count
    inside = camera.backproject(torch.full((1, 6, 6), 2.0, dtype=F64))[0, 2, 3]
    out = render_points(inside[None].float(), torch.ones(1, 1), camera, radius=1, footprint=footprint)
    assert (~out.mask[0]).sum() == count
    # a point projecting one pixel left of the image still covers column 0 with its splat
    K_inv = torch.linalg.inv(camera.K[0])
    outside = (K_inv @ torch.tensor([-0.5, 2.5, 1.0], dtype=F64)) * 2.0
    out = render_points(outside[None].float(), torch.ones(1, 1), camera, radius=1, footprint=footprint)
    assert (~out.mask[0]).nonzero().tolist() == ([[1, 0], [2, 0], [3, 0]] if footprint == "square" else [[2, 0]])


@pytest.mark.parametrize(("radius", "footprint"), [(0, "square"), (1, "square"), (2, "disc"), (2, "square")])
def test_vectorised_renderer_matches_the_naive_z_buffer(radius: int, footprint: str) -> None:
    g = torch.Generator().manual_seed(radius)
    points = torch.randn(6000, 3, generator=g) * torch.tensor([1.5, 1.0, 1.0]) + torch.tensor([0.0, 0.0, 4.0])
    ids = torch.arange(6000)[:, None]  # colour = point index: the winner itself is compared
    eyes = torch.tensor([[0.0, 0.0, 0.0], [0.6, 0.3, -0.5], [-0.8, 0.1, 0.4], [0.0, -0.5, 6.0]], dtype=F64)
    c2w = look_at(eyes, torch.tensor([0.0, 0.0, 4.0], dtype=F64).expand(4, 3), torch.tensor([0.0, -1.0, 0.0], dtype=F64))
    cameras = Camera.from_fov(c2w, 30, 40, 70.0)

    fast = render_points(points, ids, cameras, radius=radius, footprint=footprint, chunk_points=2500, chunk_cameras=3)
    naive = render_points_naive(points, ids, cameras, radius=radius, footprint=footprint)
    assert (fast.mask == naive.mask).float().mean() >= 0.999
    both = fast.covered & naive.covered
    same = fast.rgb[..., 0] == naive.rgb[..., 0]
    assert same[both].float().mean() >= 0.999  # float32 vs float64 projection may differ on pixel edges
    assert torch.allclose(fast.depth[both & same], naive.depth[both & same], rtol=1e-5)
    assert fast.covered.float().mean() > 0.3


def test_cameras_render_alike_alone_or_together() -> None:
    g = torch.Generator().manual_seed(7)
    points = torch.randn(8000, 3, generator=g) + torch.tensor([0.0, 0.0, 4.0])
    ids = torch.arange(8000)[:, None]
    eyes = torch.randn(6, 3, generator=g, dtype=F64) * 0.5
    c2w = look_at(eyes, torch.tensor([0.0, 0.0, 4.0], dtype=F64).expand(6, 3), torch.tensor([0.0, -1.0, 0.0], dtype=F64))
    cameras = Camera.from_fov(c2w, 24, 32, 70.0)
    together = render_points(points, ids, cameras)
    for i in range(6):
        alone = render_points(points, ids, cameras[i])
        assert torch.equal(alone.mask, together.mask[i : i + 1])
        assert (alone.rgb == together.rgb[i : i + 1]).float().mean() >= 0.999


def test_far_from_the_origin_renders_like_near_it() -> None:
    g = torch.Generator().manual_seed(6)
    points = torch.randn(5000, 3, generator=g, dtype=F64) + torch.tensor([0.0, 0.0, 4.0], dtype=F64)
    ids = torch.arange(5000)[:, None]
    cameras = Camera.from_fov(look_at(torch.zeros(1, 3, dtype=F64), torch.tensor([[0.0, 0.0, 4.0]], dtype=F64),
                                      torch.tensor([0.0, -1.0, 0.0], dtype=F64)), 40, 50, 70.0)
    shift = torch.tensor([3e4, -2e4, 5e4], dtype=F64)
    moved = Camera(cameras.K, cameras.c2w.clone(), 40, 50)
    moved.c2w[:, :3, 3] += shift
    near_origin = render_points(points, ids, cameras)
    far_away = render_points(points + shift, ids, moved)
    assert (near_origin.rgb == far_away.rgb).float().mean() >= 0.999
    assert torch.allclose(near_origin.depth, far_away.depth, rtol=1e-5)


def test_empty_cloud_and_bad_input() -> None:
    camera = reference_camera(4, 5)
    out = render_points(torch.zeros(0, 3), torch.zeros(0, 3), camera)
    assert out.rgb.shape == (1, 4, 5, 3) and bool(out.mask.all()) and bool((out.depth == 0).all())
    with pytest.raises(InvalidInputError):
        render_points(torch.tensor([[0.0, 0.0, torch.nan]]), torch.zeros(1, 3), camera)
    with pytest.raises(InvalidInputError):
        render_points(torch.zeros(2, 3), torch.zeros(3, 3), camera)


def test_compress_far_depth_is_continuous_monotonic_and_bounded() -> None:
    m = 5.0
    d = torch.linspace(0.01, 500.0, 200_001, dtype=F64)
    out = compress_far_depth(d, m)
    assert torch.equal(out[d <= m], d[d <= m])
    assert bool((out.diff() > 0).all()) and bool((out < 2 * m).all())
    eps = 1e-7
    below, above = compress_far_depth(torch.tensor([m - eps, m + eps], dtype=F64), m)
    assert abs(above - below) <= 2.1 * eps  # continuous with unit slope on both sides of m
    assert compress_far_depth(torch.tensor(4 * m, dtype=F64), m).item() == pytest.approx(1.75 * m)


def test_render_far_compress_uses_the_median_depth_per_frame() -> None:
    camera = reference_camera(16, 16)
    depth = torch.full((1, 16, 16), 2.0, dtype=F64)
    depth[:, :, :4] = 100.0  # a far strip
    points = camera.backproject(depth).reshape(-1, 3).float()
    out = render_points(points, torch.ones(len(points), 1), camera, radius=0, far_compress=8.0)
    m = 16.0  # 8 x median depth 2
    assert torch.allclose(out.depth[0, :, 4:], torch.full((16, 12), 2.0))
    assert torch.allclose(out.depth[0, :, :4], torch.full((16, 4), 2 * m - m * m / 100.0))


def test_depth_edge_mask_marks_only_discontinuities() -> None:
    depth = torch.full((3, 24, 256), 2.0, dtype=F64)
    depth[0, :, 128:] = 20.0  # a step between columns 127 and 128
    depth[1] = torch.linspace(2.0, 3.0, 256, dtype=F64)  # a smooth slope
    depth[2, :, 200:] = torch.inf  # sky
    edges = depth_edge_mask(depth)
    assert bool(edges[0, :, 127:129].all()) and int(edges[0].sum()) == 2 * 24
    assert not bool(edges[1].any())
    assert bool(edges[2, :, 199:201].all()) and int(edges[2].sum()) == 2 * 24


def test_voxel_downsample_against_brute_force() -> None:
    g = torch.Generator().manual_seed(4)
    points = torch.rand(3000, 3, generator=g, dtype=F64) * 2 - 1
    colors = torch.randint(0, 256, (3000, 3), generator=g, dtype=torch.uint8)
    size = 0.25
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, cell in enumerate(torch.floor(points / size).long().tolist()):
        groups.setdefault(tuple(cell), []).append(i)
    firsts = sorted(min(members) for members in groups.values())

    kept_points, kept_colors, kept = voxel_downsample(points, colors, size)
    assert kept.tolist() == firsts
    assert torch.equal(kept_points, points[kept]) and torch.equal(kept_colors, colors[kept])

    mean_points, mean_colors, kept = voxel_downsample(points, colors, size, keep="mean")
    assert kept.tolist() == firsts
    by_first = {min(members): members for members in groups.values()}
    for row, first in enumerate(firsts[:50]):
        members = torch.tensor(by_first[first])
        assert torch.allclose(mean_points[row], points[members].mean(dim=0), atol=1e-12)
        assert torch.equal(mean_colors[row], colors[members].double().mean(dim=0).round().to(torch.uint8))


def test_merging_the_same_cloud_keeps_the_cache_bounded() -> None:
    g = torch.Generator().manual_seed(5)
    points = torch.randn(20_000, 3, generator=g)
    colors = torch.rand(20_000, 3, generator=g)
    once = merge_clouds((points[:0], colors[:0]), (points, colors), 0.05)
    cache = once
    for _ in range(3):
        jitter = torch.randn(points.shape, generator=g) * 1e-4
        cache = merge_clouds(cache, (points + jitter, colors), 0.05)
    assert abs(len(cache[0]) - len(once[0])) <= 0.05 * len(once[0])
    assert len(once[0]) < len(points)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    g = torch.Generator().manual_seed(9)
    points = torch.randn(50_000, 3, generator=g) + torch.tensor([0.0, 0.0, 4.0])
    ids = torch.arange(50_000)[:, None]
    cameras = Camera.from_fov(look_at(torch.zeros(2, 3), torch.tensor([[0.0, 0.0, 1.0], [0.1, 0.0, 1.0]]),
                                      torch.tensor([0.0, -1.0, 0.0])), 60, 80, 70.0)
    cpu = render_points(points, ids, cameras)
    gpu = render_points(points.cuda(), ids.cuda(), cameras)
    assert torch.equal(gpu.mask.cpu(), cpu.mask)
    assert (gpu.rgb.cpu() == cpu.rgb).float().mean() >= 0.999


def test_render_benchmark_reports_consistent_figures() -> None:
    result = run_render_benchmark(num_points=20_000, num_frames=5, height=48, width=64, repeats=1, baseline_frames=2)
    assert result["baseline_frames"] == 2 and result["baseline_extrapolated"]
    assert result["agreement"] > 0.99 and result["coverage"] > 0.5
    assert result["throughput"] == pytest.approx(20_000 * 5 / result["seconds"])
    assert result["speedup"] == pytest.approx(result["throughput"] / result["baseline_throughput"])
    report = format_report(result)
    assert "speedup" in report and "extrapolated" in report and "M point·frames/s" in report
