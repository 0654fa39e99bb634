"""Synthetic scenes against their analytic ground truth."""

from __future__ import annotations

import math

import pytest
import torch

from worldstereo.geometry.camera import Camera, look_at
from worldstereo.geometry.spherical import equirect_directions
from worldstereo.synthetic import SCENE_KINDS, SyntheticScene, make_scene
from worldstereo.synthetic.textures import BACKGROUND

H, W = 60, 96
UP = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)


@pytest.fixture(scope="module", params=SCENE_KINDS)
def scene(request) -> SyntheticScene:
    return make_scene(request.param, seed=0)


def _surface_gap(scene: SyntheticScene, points: torch.Tensor) -> torch.Tensor:
    """Distance from each point to the nearest primitive surface."""
    return scene.geometry.signed_distance(points).abs().amin(dim=1)


def _second_view(scene: SyntheticScene, shift: float = 0.4) -> Camera:
    """The input camera moved sideways by ``shift`` metres, still looking at the scene's target."""
    first = scene.input_camera(H, W)
    eye = first.centers[0] + shift * first.c2w[0, :3, 0]
    target = torch.tensor(scene.target, dtype=torch.float64)
    target = target if scene.kind != "panorama360" else eye + first.forward[0]
    return Camera(first.K, look_at(eye, target, UP)[None], H, W)


def _bilinear(image: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Sample ``image [H,W,C]`` at continuous pixel coordinates ``uv [P,2]`` (pixel centres at +0.5)."""
    h, w = image.shape[:2]
    grid = torch.stack([2 * uv[:, 0] / w - 1, 2 * uv[:, 1] / h - 1], dim=-1)
    sampled = torch.nn.functional.grid_sample(
        image.permute(2, 0, 1)[None].double(), grid[None, None], align_corners=False, padding_mode="border"
    )
    return sampled[0, :, 0].T


def test_backprojected_depth_lies_on_the_closest_surface(scene):
    cameras = Camera.cat([scene.input_camera(H, W), _second_view(scene)])
    views = scene.render(cameras)
    assert views.rgb.shape == (2, H, W, 3) and views.rgb.dtype == torch.float32
    assert views.depth.shape == (2, H, W) and views.depth.dtype == torch.float64
    hit = torch.isfinite(views.depth)
    assert hit.float().mean() > 0.95
    if scene.kind != "object":
        assert hit.all()
    points = cameras.backproject(views.depth.nan_to_num(posinf=0.0))[hit]
    depth = views.depth[hit]
    assert (_surface_gap(scene, points) / depth).max() < 1e-9
    # The open segment from the camera to the hit is free space: no earlier surface was skipped.
    centers = cameras.centers[:, None, None, :].expand(2, H, W, 3)[hit]
    for fraction in torch.linspace(0.02, 0.995, 25, dtype=torch.float64):
        between = centers + fraction * (points - centers)
        assert scene.geometry.signed_distance(between).amin(dim=1).min() > 0


def test_points_seen_in_two_views_agree_in_depth_and_colour(scene):
    cam_a, cam_b = scene.input_camera(H, W), _second_view(scene)
    views = scene.render(Camera.cat([cam_a, cam_b]))
    hit_a = torch.isfinite(views.depth[0])
    points = cam_a.backproject(views.depth[:1].nan_to_num(posinf=0.0))[0][hit_a]
    colors_a = views.rgb[0][hit_a]

    # Exact: cast B's rays towards A's points; visible where the first hit is the point itself.
    center_b = cam_b.centers[0].expand_as(points)
    t, ids = scene.cast(center_b, points - center_b)
    assert (t <= 1 + 1e-9).all()
    visible = t > 1 - 1e-9
    assert visible.float().mean() > 0.6
    assert (t[visible] - 1).abs().max() < 1e-9
    seen_from_b = scene.colors_at(center_b[visible] + t[visible, None] * (points - center_b)[visible], ids[visible])
    assert torch.allclose(seen_from_b, colors_a[visible], atol=1e-6)

    # In B's image: where the point projects inside and passes B's depth test, B's depth and colour match.
    uv, z = cam_b.project(points)
    uv, z = uv[0], z[0]
    inside = (uv[:, 0] > 1) & (uv[:, 0] < W - 1) & (uv[:, 1] > 1) & (uv[:, 1] < H - 1) & (z > 0)
    depth_b = _bilinear(views.depth[1].nan_to_num(posinf=1e6)[..., None], uv[inside])[:, 0]
    agree = ((depth_b - z[inside]).abs() / z[inside]) < 0.01
    assert (agree == visible[inside]).float().mean() > 0.9
    assert agree.float().mean() > 0.5
    color_b = _bilinear(views.rgb[1], uv[inside])[agree].float()
    assert (color_b - colors_a[inside][agree]).abs().median() < 0.03


def test_panorama_distance_backprojects_onto_the_scene():
    scene = make_scene("panorama360", seed=0)
    rgb, distance = scene.render_panorama(64, 128)
    assert rgb.shape == (64, 128, 3) and rgb.dtype == torch.float32
    assert distance.shape == (64, 128) and distance.dtype == torch.float64
    assert torch.isfinite(distance).all() and (distance > 0.5).all()
    points = (equirect_directions(64, 128) * distance[..., None]).reshape(-1, 3)
    assert (_surface_gap(scene, points) / distance.reshape(-1)).max() < 1e-9

    # The input camera sits at the panorama centre: its depth agrees with the projected panorama points.
    camera = scene.input_camera(H, W)
    depth = scene.render(camera).depth[0]
    uv, z = camera.project(points)
    inside = (uv[0, :, 0] > 1) & (uv[0, :, 0] < W - 1) & (uv[0, :, 1] > 1) & (uv[0, :, 1] < H - 1) & (z[0] > 0)
    sampled = _bilinear(depth[..., None], uv[0, inside])[:, 0]
    assert inside.sum() > 200
    assert (((sampled - z[0, inside]).abs() / z[0, inside]) < 0.01).float().mean() > 0.9


def test_panorama_from_another_centre_measures_distance_from_it():
    scene = make_scene("room", seed=0)
    center = torch.tensor(scene.eye, dtype=torch.float64)
    _, distance = scene.render_panorama(32, 64, center=center)
    assert torch.isfinite(distance).all()
    points = (equirect_directions(32, 64) * distance[..., None]).reshape(-1, 3) + center
    assert (_surface_gap(scene, points) / distance.reshape(-1)).max() < 1e-9


def test_rays_that_miss_everything_are_infinite_with_the_background_colour():
    scene = make_scene("object", seed=0)
    sky = look_at(*(torch.tensor(v, dtype=torch.float64) for v in ((0, -2.5, 1.3), (0, -4.0, 3.5))), UP)
    views = scene.render(Camera.from_fov(sky, H, W, 65.0))
    assert torch.isinf(views.depth).all() and (views.depth > 0).all()
    assert torch.allclose(views.rgb, torch.tensor(BACKGROUND, dtype=torch.float32).expand(1, H, W, 3))


def test_scenes_are_deterministic_by_seed():
    for kind in SCENE_KINDS:
        first = make_scene(kind, seed=3)
        again = make_scene(kind, seed=3).render(first.input_camera(H, W))
        other = make_scene(kind, seed=4).render(first.input_camera(H, W))
        reference = first.render(first.input_camera(H, W))
        assert torch.equal(reference.rgb, again.rgb) and torch.equal(reference.depth, again.depth)
        assert (reference.rgb - other.rgb).abs().mean() > 0.02


def test_unknown_scene_kind_or_bad_seed_is_rejected():
    with pytest.raises(ValueError, match="unknown scene kind"):
        make_scene("forest")
    with pytest.raises(ValueError, match="non-negative"):
        make_scene("room", seed=-1)


def test_colours_are_a_function_of_the_surface_point_only(scene):
    points, colors = scene.surface_points(2000, seed=5)
    _, ids = scene.geometry.signed_distance(points).abs().min(dim=1)
    assert torch.equal(scene.colors_at(points, ids), colors)
    assert colors.min() >= 0 and colors.max() <= 1
    assert colors.std(dim=0).min() > 0.05


def test_rendering_is_independent_of_chunking_and_batching(scene):
    cameras = Camera.cat([scene.input_camera(H, W), _second_view(scene)])
    together = scene.render(cameras)
    apart = [scene.render(cameras[i], chunk=997) for i in range(2)]
    assert torch.equal(together.depth, torch.cat([v.depth for v in apart]))
    assert torch.equal(together.rgb, torch.cat([v.rgb for v in apart]))


def test_rendering_follows_the_camera_dtype(scene):
    camera = scene.input_camera(H, W)
    exact = scene.render(camera)
    single = scene.render(camera.to(dtype=torch.float32))
    assert single.depth.dtype == torch.float64
    finite = torch.isfinite(exact.depth)
    close = (single.depth[finite] - exact.depth[finite]).abs() / exact.depth[finite] < 1e-4
    assert close.float().mean() > 0.99
    assert (single.rgb - exact.rgb).abs().median() < 1e-3


def test_surface_points_lie_on_visible_surfaces(scene):
    points, colors = scene.surface_points(4000, seed=1)
    assert points.shape == (4000, 3) and points.dtype == torch.float64
    assert colors.shape == (4000, 3) and colors.dtype == torch.float32
    distances = scene.geometry.signed_distance(points)
    assert distances.abs().amin(dim=1).max() < 1e-9 * scene.extent
    # On its own primitive only: strictly outside every other occupied region.
    assert ((distances > 1e-7 * scene.extent).sum(dim=1) == len(scene.geometry) - 1).all()
    again, _ = scene.surface_points(4000, seed=1)
    other, _ = scene.surface_points(4000, seed=2)
    assert torch.equal(points, again) and not torch.equal(points, other)


def test_surface_points_are_uniform_by_area():
    scene = make_scene("room", seed=0)
    lo, hi = scene.geometry.boxes.lo[0], scene.geometry.boxes.hi[0]  # the room itself
    points, _ = scene.surface_points(40_000, seed=0)
    on_ceiling = (points[:, 2] - hi[2]).abs() < 1e-9
    band_bottom = 2.5  # above every object and picture
    on_band = (points[:, 2] > band_bottom) & ~on_ceiling
    size = hi - lo
    expected = 2 * (size[0] + size[1]) * (hi[2] - band_bottom) / (size[0] * size[1])
    assert on_band.sum() / on_ceiling.sum() == pytest.approx(float(expected), rel=0.08)
    # Uniform across the ceiling: mean at its centre, variance of a uniform distribution.
    x = points[on_ceiling, 0]
    assert float(x.mean()) == pytest.approx(float((lo[0] + hi[0]) / 2), abs=0.1)
    assert float(x.var()) == pytest.approx(float(size[0] ** 2 / 12), rel=0.08)


def test_extent_and_input_camera(scene):
    lo, hi = scene.geometry.bounds()
    assert scene.extent == pytest.approx(float((hi - lo).norm()))
    assert 5.0 < scene.extent < 15.0
    camera = scene.input_camera()
    assert (camera.height, camera.width) == (480, 768)
    fov_x = 2 * math.degrees(math.atan(camera.width / 2 / float(camera.K[0, 0, 0])))
    assert 60 <= fov_x <= 70
    assert torch.allclose(camera.centers[0], torch.tensor(scene.eye, dtype=torch.float64))
