import math

import pytest
import torch

from worldstereo.config import PanoramaSettings
from worldstereo.errors import InvalidInputError
from worldstereo.geometry.panorama import (
    panorama_cameras,
    panorama_point_cloud,
    split_panorama,
    views_to_equirect,
)
from worldstereo.geometry.spherical import equirect_directions
from worldstereo.synthetic.scenes import make_scene

H, W = 256, 512
SMALL = PanoramaSettings(view_width=208, view_height=120)


def _smooth_colour(directions: torch.Tensor) -> torch.Tensor:
    """A smooth, asymmetric colour field on the sphere (no two directions look alike)."""
    x, y, z = directions.unbind(-1)
    rgb = torch.stack([torch.sin(3 * x + z), torch.cos(2 * y - x), torch.sin(2 * z + y)], dim=-1)
    return (0.5 + 0.35 * rgb).float()


def _psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    return 10 * math.log10(1.0 / float((a - b)[mask].double().square().mean()))


@pytest.fixture(scope="module")
def scene_panorama():
    scene = make_scene("panorama360", 0)
    rgb, distance = scene.render_panorama(H, W)
    return scene, rgb, distance


@pytest.fixture(scope="module")
def checked_views(scene_panorama):
    """Split views with depth and the exact depth of a few of them (level, up and down)."""
    scene, rgb, distance = scene_panorama
    views = split_panorama(rgb, SMALL, distance)
    chosen = torch.tensor([0, 5, 12, 22])
    return views, chosen, scene.render(views.cameras[chosen]).depth


def test_default_split_has_27_views_with_the_reference_fov_and_orientation():
    settings = PanoramaSettings()
    cameras, yaws, pitches = panorama_cameras(settings)
    assert len(cameras) == 27 and (cameras.height, cameras.width) == (480, 832)
    fov_x = 2 * torch.rad2deg(torch.atan(cameras.width / 2 / cameras.K[:, 0, 0]))
    fov_y = 2 * torch.rad2deg(torch.atan(cameras.height / 2 / cameras.K[:, 1, 1]))
    assert torch.allclose(fov_x, torch.full_like(fov_x, 120.0)) and torch.allclose(fov_y, torch.full_like(fov_y, 90.0))
    assert yaws[:9].tolist() == pytest.approx([40.0 * k for k in range(9)])
    assert pitches.tolist() == pytest.approx([0.0] * 9 + [26.57] * 9 + [-26.57] * 9)
    assert torch.allclose(cameras.centers, torch.zeros(27, 3, dtype=torch.float64))
    f64 = dict(dtype=torch.float64)
    assert torch.allclose(cameras.forward[0], torch.tensor([1.0, 0.0, 0.0], **f64))  # yaw 0 pitch 0 looks along +x
    assert torch.allclose(cameras.c2w[0, :3, 1], torch.tensor([0.0, 0.0, -1.0], **f64))  # image up = +z
    assert torch.allclose(cameras.c2w[0, :3, 0], torch.tensor([0.0, -1.0, 0.0], **f64))  # turning right = -y
    assert torch.allclose(cameras.forward[2], torch.tensor([math.cos(math.radians(80)), math.sin(math.radians(80)), 0.0], **f64))
    assert cameras.forward[9, 2].item() == pytest.approx(math.sin(math.radians(26.57)))
    assert cameras.forward[18, 2].item() == pytest.approx(-math.sin(math.radians(26.57)))
    R = cameras.c2w[:, :3, :3]
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3, **f64).expand(27, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(27, **f64))


def test_split_views_sample_the_panorama_along_their_rays():
    pano = _smooth_colour(equirect_directions(H, W))
    views = split_panorama(pano, SMALL)
    rays = torch.nn.functional.normalize(views.cameras.ray_directions(), dim=-1)
    assert views.images.shape == (27, 120, 208, 3) and views.depth is None
    assert (views.images - _smooth_colour(rays)).abs().max() < 2e-3


def test_round_trip_psnr_on_a_smooth_panorama():
    pano = _smooth_colour(equirect_directions(H, W))
    views = split_panorama(pano, SMALL)
    back, covered = views_to_equirect(views.images, views.cameras, H, W)
    assert covered.float().mean() > 0.75
    assert _psnr(back, pano, covered) >= 35.0
    shuffled, _ = views_to_equirect(views.images.roll(1, dims=0), views.cameras, H, W)
    assert _psnr(shuffled, pano, covered) < 20.0  # the wrong view per direction is detected


def test_round_trip_psnr_on_the_synthetic_panorama(scene_panorama):
    _, rgb, _ = scene_panorama
    views = split_panorama(rgb, SMALL)
    back, covered = views_to_equirect(views.images, views.cameras, H, W)
    latitude = torch.rad2deg(torch.asin(equirect_directions(H, W)[..., 2]))
    assert covered[latitude.abs() < 70].all() and not covered[latitude.abs() > 80].any()
    assert _psnr(back, rgb, covered) >= 35.0


def test_split_depth_matches_ground_truth(checked_views):
    views, chosen, truth = checked_views
    relative = (views.depth[chosen] - truth).abs() / truth
    assert views.depth.shape == (27, 120, 208)
    assert (relative < 0.01).float().mean() > 0.95  # misses only at depth edges
    assert relative.median() < 2e-3


def test_panoramic_cloud_projects_to_the_right_pixel_and_depth(scene_panorama, checked_views):
    _, rgb, distance = scene_panorama
    views, chosen, truth = checked_views
    points, colors = panorama_point_cloud(rgb, distance, stride=2, drop_edges=False)
    assert torch.allclose(points.norm(dim=-1), distance[::2, ::2].reshape(-1), atol=1e-9)
    uv, z = views.cameras[chosen].project(points)
    col, row = uv[..., 0].floor().long(), uv[..., 1].floor().long()
    seen = (z > 0) & (col >= 0) & (col < SMALL.view_width) & (row >= 0) & (row < SMALL.view_height)
    view = torch.arange(len(chosen))[:, None].expand_as(z)[seen]
    col, row, z = col[seen], row[seen], z[seen]
    assert seen.sum() > 0.25 * len(points)
    exact = truth[view, row, col]
    split = views.depth[chosen[view], row, col]
    assert ((z - exact).abs() / exact < 0.02).float().mean() > 0.97
    assert ((z - split).abs() / split < 0.02).float().mean() > 0.95
    colour_error = (views.images[chosen[view], row, col] - colors[seen.nonzero()[:, 1]]).abs().amax(dim=-1)
    assert (colour_error < 0.1).float().mean() > 0.9


def test_point_cloud_skips_invalid_and_edge_pixels(scene_panorama):
    _, rgb, distance = scene_panorama
    full, _ = panorama_point_cloud(rgb, distance, drop_edges=False)
    assert len(full) == H * W
    trimmed, _ = panorama_point_cloud(rgb, distance)
    assert 0.8 * H * W < len(trimmed) < H * W
    holes = distance.clone()
    holes[:10] = math.inf
    holes[-10:] = 0.0
    points, colors = panorama_point_cloud(rgb, holes, drop_edges=False, center=torch.tensor([1.0, 2.0, 3.0]))
    assert len(points) == (H - 20) * W and len(colors) == len(points)
    assert torch.allclose((points - torch.tensor([1.0, 2.0, 3.0], dtype=points.dtype)).norm(dim=-1), holes[10:-10].reshape(-1))
    strided, _ = panorama_point_cloud(rgb, distance, stride=4, drop_edges=False)
    assert len(strided) == (H // 4) * (W // 4)


def test_uint8_panorama_and_bad_input():
    pano = (_smooth_colour(equirect_directions(64, 128)) * 255).round().to(torch.uint8)
    views = split_panorama(pano, PanoramaSettings(num_yaws=3, pitches_deg=(0.0,), view_width=32, view_height=24))
    assert views.images.dtype == torch.float32 and len(views) == 3 and 0 <= views.images.min() <= views.images.max() <= 1
    with pytest.raises(InvalidInputError):
        split_panorama(pano, SMALL, torch.ones(3, 3))
    with pytest.raises(InvalidInputError):
        panorama_point_cloud(pano, torch.ones(64, 128), stride=0)
    with pytest.raises(InvalidInputError):
        views_to_equirect(views.images[:2], views.cameras, 64, 128)
