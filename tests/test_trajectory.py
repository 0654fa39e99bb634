import json
import math

import pytest
import torch
from pydantic import ValidationError

from worldstereo.config import TrajectorySettings
from worldstereo.errors import InvalidInputError
from worldstereo.geometry.camera import Camera, look_at
from worldstereo.geometry.trajectory import (
    custom_trajectory,
    keyframe_indices,
    load_trajectory_json,
    plan_trajectories,
    rotation_about_axis,
    trajectory_to_json,
)
from worldstereo.synthetic.scenes import make_scene

D = 2.5


def _tensor(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _input_camera(height: int = 48, width: int = 64, fov: float = 60.0) -> Camera:
    c2w = look_at(_tensor(0.3, -1.0, 0.7), _tensor(1.5, 2.0, 1.1), _tensor(0.0, 0.0, 1.0))
    return Camera.from_fov(c2w, height, width, fov)


def _angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = torch.broadcast_tensors(a, b)
    return torch.rad2deg(torch.atan2(torch.linalg.cross(a, b, dim=-1).norm(dim=-1), (a * b).sum(-1)))


def _rotation_deg(R1: torch.Tensor, R2: torch.Tensor) -> float:
    return math.degrees(math.acos(max(-1.0, min(1.0, ((R1.T @ R2).trace().item() - 1) / 2))))


@pytest.fixture(scope="module")
def plan():
    camera = _input_camera()
    return camera, {t.name: t for t in plan_trajectories(camera, D, TrajectorySettings())}


def test_default_order_and_frame_count():
    camera = _input_camera()
    trajectories = plan_trajectories(camera, D, TrajectorySettings())
    assert [t.name for t in trajectories] == ["orbit", "up", "right", "left"]
    assert all(len(t.cameras) == 81 for t in trajectories)
    custom = plan_trajectories(camera, D, TrajectorySettings(order=("left", "up"), num_frames=9))
    assert [t.name for t in custom] == ["left", "up"] and len(custom[0].cameras) == 9


def test_first_camera_is_exactly_the_input(plan):
    camera, trajectories = plan
    for t in trajectories.values():
        assert torch.equal(t.cameras.c2w[0], camera.c2w[0])
        assert torch.equal(t.cameras.K, camera.K.expand_as(t.cameras.K))
        assert (t.cameras.height, t.cameras.width) == (camera.height, camera.width)


def test_rotation_presets_follow_the_paper(plan):
    camera, trajectories = plan
    center = camera.centers[0] + D * camera.forward[0]
    right, up = camera.c2w[0, :3, 0], -camera.c2w[0, :3, 1]
    for name, angle in [("up", 45.0), ("right", 90.0), ("left", 90.0)]:
        t = trajectories[name]
        cams = t.cameras
        assert torch.allclose(t.center, center, atol=1e-12)
        assert t.radius == D and t.angle_deg == angle and t.fraction == 1.0
        distance = (cams.centers - center).norm(dim=-1)
        assert torch.allclose(distance, torch.full_like(distance, D), atol=1e-6)
        # every camera keeps looking at the centre
        assert _angle_deg(cams.forward, center - cams.centers).max() < 1e-6
        # the final camera is turned by the full angle, and so is its arc
        assert _rotation_deg(cams.c2w[0, :3, :3], cams.c2w[-1, :3, :3]) == pytest.approx(angle, abs=1e-6)
        assert _angle_deg(cams.centers[0] - center, cams.centers[-1] - center).item() == pytest.approx(angle, abs=1e-6)
    assert (trajectories["up"].cameras.centers[-1] - camera.centers[0]) @ up > 0.5 * D
    assert (trajectories["right"].cameras.centers[-1] - camera.centers[0]) @ right == pytest.approx(D, abs=1e-9)
    assert (trajectories["left"].cameras.centers[-1] - camera.centers[0]) @ right == pytest.approx(-D, abs=1e-9)
    # up is a pure elevation (no sideways motion); right/left are pure azimuth (no vertical motion)
    assert ((trajectories["up"].cameras.centers - camera.centers) @ right).abs().max() < 1e-9
    assert ((trajectories["right"].cameras.centers - camera.centers) @ up).abs().max() < 1e-9


def test_orbit_is_a_closed_loop_of_radius_point_three_d(plan):
    camera, trajectories = plan
    t = trajectories["orbit"]
    right, forward = camera.c2w[0, :3, 0], camera.forward[0]
    loop_center = camera.centers[0] - 0.3 * D * right
    radius = (t.cameras.centers - loop_center).norm(dim=-1)
    assert t.radius == pytest.approx(0.3 * D) and t.angle_deg == 360.0
    assert torch.allclose(radius, torch.full_like(radius, 0.3 * D), atol=1e-6)
    assert ((t.cameras.centers - camera.centers) @ forward).abs().max() < 1e-9  # in the image plane
    assert torch.allclose(t.cameras.c2w[-1], t.cameras.c2w[0], atol=1e-9)  # closed
    assert _angle_deg(t.cameras.forward, t.center - t.cameras.centers).max() < 1e-6


def test_orbit_aspect_sets_the_vertical_semi_axis():
    camera = _input_camera()
    (t,) = plan_trajectories(camera, D, TrajectorySettings(order=("orbit",), orbit_aspect=4 / 3))
    up = -camera.c2w[0, :3, 1]
    height = (t.cameras.centers - camera.centers) @ up
    assert height.max().item() == pytest.approx(0.4 * D, abs=1e-3)
    assert height.min().item() == pytest.approx(-0.4 * D, abs=1e-3)


def test_paths_are_smooth(plan):
    _, trajectories = plan
    for t in trajectories.values():
        steps = (t.cameras.centers[1:] - t.cameras.centers[:-1]).norm(dim=-1)
        assert steps.max() / steps.min() < 1 + 1e-6  # constant speed, no jumps
        turns = torch.tensor(
            [_rotation_deg(t.cameras.c2w[i, :3, :3], t.cameras.c2w[i + 1, :3, :3]) for i in range(len(steps))]
        )
        assert turns.max() < 2 * t.angle_deg / (len(t.cameras) - 1) + 1e-6


def _wall_depth(camera: Camera, z: float) -> torch.Tensor:
    """Z-depth of a fronto-parallel wall at camera depth ``z``."""
    return torch.full((camera.height, camera.width), z, dtype=torch.float64)


def test_face_forward_scene_shrinks_sideways_rotations():
    camera = _input_camera()
    trajectories = {
        t.name: t for t in plan_trajectories(camera, D, TrajectorySettings(), depth=_wall_depth(camera, 1.02 * D))
    }
    margin = TrajectorySettings().surface_margin * D
    for name in ("right", "left"):
        t = trajectories[name]
        assert t.fraction < 1.0 and t.angle_deg == pytest.approx(90.0 * t.fraction)
        z = (t.cameras.centers - camera.centers[0]) @ camera.forward[0]
        assert z.max() < 1.02 * D - margin  # every camera stays in front of the wall
        distance = (t.cameras.centers - t.center).norm(dim=-1)
        assert torch.allclose(distance, torch.full_like(distance, D), atol=1e-6)
    assert trajectories["up"].fraction == 1.0 and trajectories["up"].angle_deg == 45.0
    assert trajectories["orbit"].fraction == 1.0


def test_open_scene_keeps_full_angles():
    camera = _input_camera()
    trajectories = plan_trajectories(camera, D, TrajectorySettings(), depth=_wall_depth(camera, 4 * D))
    assert all(t.fraction == 1.0 for t in trajectories)
    assert [t.angle_deg for t in trajectories] == [360.0, 45.0, 90.0, 90.0]


def test_shrinking_can_be_disabled():
    camera = _input_camera()
    settings = TrajectorySettings(shrink_for_collisions=False)
    trajectories = plan_trajectories(camera, D, settings, depth=_wall_depth(camera, 1.02 * D))
    assert all(t.fraction == 1.0 for t in trajectories)


def test_cache_points_near_a_path_shrink_only_that_path():
    camera = _input_camera()
    settings = TrajectorySettings()
    right = camera.c2w[0, :3, 0]
    center = camera.centers[0] + D * camera.forward[0]
    blocker = center + D * right  # where the right arc ends
    points = blocker + 0.02 * torch.randn(200, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    trajectories = {t.name: t for t in plan_trajectories(camera, D, settings, cache_points=points)}
    assert trajectories["right"].fraction < 1.0
    clearance = torch.cdist(trajectories["right"].cameras.centers, points).min()
    assert clearance >= TrajectorySettings().clearance * D
    assert all(trajectories[n].fraction == 1.0 for n in ("orbit", "up", "left"))


def _yawed(camera: Camera, degrees: float, shift: float) -> torch.Tensor:
    """The input pose turned about its own down axis by ``degrees`` and moved ``shift`` along its x axis."""
    start, c2w = camera.c2w[0], camera.c2w[0].clone()
    angle = torch.tensor([math.radians(degrees)], dtype=torch.float64)
    c2w[:3, :3] = rotation_about_axis(start[:3, 1], angle)[0] @ start[:3, :3]
    c2w[:3, 3] += shift * start[:3, 0]
    return c2w


def test_custom_path_starts_at_the_input_and_passes_its_waypoints_evenly():
    camera = _input_camera()
    waypoints = torch.stack([_yawed(camera, 30.0, 1.0), _yawed(camera, 60.0, 2.0)])
    path = custom_trajectory("walk", camera, waypoints, 9)

    assert path.name == "walk" and len(path) == 9 and path.center is None
    c2w = path.cameras.c2w
    assert torch.equal(c2w[0], camera.c2w[0]) and torch.equal(c2w[-1], waypoints[-1])
    assert torch.allclose(c2w[4], waypoints[0], atol=1e-12)  # the input was put in front: 3 poses, 2 segments
    start = camera.c2w[0]
    for i in range(9):  # 7.5 degrees and 0.25 along x per frame, on both segments
        assert _rotation_deg(start[:3, :3], c2w[i, :3, :3]) == pytest.approx(7.5 * i, abs=1e-9)
        assert torch.allclose(c2w[i, :3, 3], start[:3, 3] + 0.25 * i * start[:3, 0], atol=1e-12)
    assert torch.equal(path.cameras.K, camera.K.expand(9, 3, 3))

    given_start = custom_trajectory("walk", camera, torch.cat([camera.c2w, waypoints]), 9)
    assert torch.allclose(given_start.cameras.c2w, c2w, atol=1e-12)  # a leading input pose is not doubled


def test_custom_path_rejects_bad_waypoints():
    camera = _input_camera()
    with pytest.raises(InvalidInputError, match="never leaves"):
        custom_trajectory("walk", camera, camera.c2w, 9)
    scaled = camera.c2w.clone()
    scaled[0, :3, :3] *= 2
    with pytest.raises(InvalidInputError, match="rigid"):
        custom_trajectory("walk", camera, scaled, 9)
    with pytest.raises(InvalidInputError, match="two frames"):
        custom_trajectory("walk", camera, _yawed(camera, 10.0, 0.0)[None], 1)


def test_keyframe_indices_are_uniform():
    idx = keyframe_indices(81, 21)
    assert idx.tolist() == list(range(0, 81, 4))
    idx = keyframe_indices(50, 7)
    assert idx[0] == 0 and idx[-1] == 49 and len(torch.unique(idx)) == 7
    steps = idx.diff()
    assert steps.max() - steps.min() <= 1
    assert keyframe_indices(5, 1).tolist() == [0]
    with pytest.raises(InvalidInputError):
        keyframe_indices(4, 5)


def test_json_round_trip():
    camera = _input_camera()
    (t,) = plan_trajectories(camera, D, TrajectorySettings(order=("right",), num_frames=21))
    text = json.dumps(trajectory_to_json(t))
    back = load_trajectory_json(text)
    assert back.name == "right" and len(back) == 21
    assert (back.cameras.height, back.cameras.width) == (camera.height, camera.width)
    assert torch.allclose(back.cameras.c2w, t.cameras.c2w, atol=1e-12)
    assert torch.equal(back.cameras.K, t.cameras.K)
    assert torch.equal(back.center, t.center)
    assert (back.radius, back.angle_deg, back.fraction) == (t.radius, t.angle_deg, t.fraction)


def test_json_in_the_released_camera_convention():
    camera = _input_camera()
    w2c = camera.w2c.expand(3, 4, 4).clone()
    w2c[:, 0, 3] += torch.arange(3, dtype=torch.float64)
    data = {"extrinsics": w2c.tolist(), "K": camera.K[0].tolist(), "height": 48, "width": 64}
    t = load_trajectory_json(data)
    assert t.name == "custom" and t.center is None and len(t) == 3
    assert torch.allclose(t.cameras.w2c, w2c, atol=1e-12)
    assert torch.equal(t.cameras.K, camera.K.expand(3, 3, 3))


@pytest.mark.parametrize(
    "data",
    [
        "{not json",
        {"w2c": [[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]], "height": 4, "width": 4},
        {"w2c": [[[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]], "K": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "height": 4, "width": 4},
        {"w2c": [[1, 0, 0, 0]], "K": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "height": 4, "width": 4},
        {"w2c": [[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]], "K": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "width": 4},
    ],
)
def test_json_rejects_bad_input(data):
    with pytest.raises(InvalidInputError):
        load_trajectory_json(data)


@pytest.mark.parametrize(
    "field", [{"shrink_factor": 1.0}, {"shrink_factor": 0.0}, {"min_fraction": 0.0}, {"min_fraction": 1.5},
              {"orbit_aspect": 0.0}, {"surface_margin": -0.1}, {"clearance": -0.1}, {"collision_chunk": 0}],
)
def test_planner_settings_are_bounded(field):
    with pytest.raises(ValidationError, match=next(iter(field))):
        TrajectorySettings(**field)


def test_planner_rejects_bad_input():
    camera = _input_camera()
    with pytest.raises(InvalidInputError):
        plan_trajectories(Camera.cat([camera, camera]), D, TrajectorySettings())
    with pytest.raises(InvalidInputError):
        plan_trajectories(camera, float("nan"), TrajectorySettings())
    with pytest.raises(InvalidInputError):
        plan_trajectories(camera, D, TrajectorySettings(), depth=torch.ones(3, 3))


def _blocked_positions(scene, camera: Camera, trajectory) -> int:
    """Planned camera positions hidden from the input camera by a surface (i.e. inside or behind geometry)."""
    eyes = trajectory.cameras.centers[1:]
    offset = eyes - camera.centers
    distance = offset.norm(dim=-1)
    hit, _ = scene.cast(camera.centers.expand_as(eyes), offset / distance[:, None])
    return int((hit < distance).sum())


def test_synthetic_scenes_open_scene_untouched_enclosed_room_kept_inside():
    settings = TrajectorySettings(num_frames=21)
    scene = make_scene("object", 0)
    camera = scene.input_camera(60, 80)
    depth = scene.render(camera).depth[0]
    median = float(depth[torch.isfinite(depth)].median())
    trajectories = plan_trajectories(camera, median, settings, depth=depth)
    assert all(t.fraction == 1.0 for t in trajectories)
    assert all(_blocked_positions(scene, camera, t) == 0 for t in trajectories)

    room = make_scene("room", 0)  # input camera 0.8 m from two walls, median depth over 4 m
    camera = room.input_camera(60, 80)
    depth = room.render(camera).depth[0]
    median = float(depth.median())
    unshrunk = plan_trajectories(camera, median, TrajectorySettings(num_frames=21, shrink_for_collisions=False))
    assert all(_blocked_positions(room, camera, t) > 0 for t in unshrunk)
    surfaces, _ = room.surface_points(8_000)  # what a panorama's 3D cache knows
    trajectories = plan_trajectories(camera, median, settings, depth=depth, cache_points=surfaces)
    assert all(t.fraction < 1.0 for t in trajectories)
    assert all(_blocked_positions(room, camera, t) == 0 for t in trajectories)
