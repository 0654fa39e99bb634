"""Pinhole camera maths on ground truth: projection round trips, rigid inverses, look-at frames, FoV."""

from __future__ import annotations

import math

import pytest
import torch

from worldstereo.errors import InvalidInputError
from worldstereo.geometry.camera import Camera, look_at, rigid_inverse


def random_poses(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    eyes = torch.randn(n, 3, generator=g, dtype=torch.float64)
    targets = eyes + torch.randn(n, 3, generator=g, dtype=torch.float64)
    return look_at(eyes, targets, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))


def test_backproject_project_round_trip() -> None:
    cam = Camera.from_fov(random_poses(3), 12, 20, 70.0, 50.0)
    depth = 0.5 + torch.rand(3, 12, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 4
    points = cam.backproject(depth)
    for i in range(3):
        uv, z = cam[i].project(points[i].reshape(-1, 3))
        assert torch.allclose(z[0], depth[i].reshape(-1), atol=1e-10)
        assert torch.allclose(uv[0], cam.pixel_grid()[..., :2].reshape(-1, 2), atol=1e-9)


def test_pixel_centres_and_principal_point() -> None:
    cam = Camera.from_fov(torch.eye(4, dtype=torch.float64), 4, 6, 90.0)
    uv, z = cam.project(torch.tensor([[0.0, 0.0, 2.0]], dtype=torch.float64))
    assert uv[0, 0].tolist() == [3.0, 2.0] and z.item() == 2.0  # the optical axis hits the image centre
    assert cam.pixel_grid()[0, 0].tolist() == [0.5, 0.5, 1.0]


def test_w2c_is_the_inverse_of_c2w() -> None:
    c2w = random_poses(5)
    cam = Camera.from_fov(c2w, 8, 8, 60.0)
    eye = torch.eye(4, dtype=torch.float64).expand(5, 4, 4)
    assert torch.allclose(cam.w2c @ c2w, eye, atol=1e-12)
    assert torch.allclose(rigid_inverse(c2w), torch.linalg.inv(c2w), atol=1e-12)


def test_look_at_is_a_proper_rotation_pointing_at_the_target() -> None:
    eye = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    target = torch.tensor([3.0, 1.0, 2.0], dtype=torch.float64)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    T = look_at(eye, target, up)
    R = T[:3, :3]
    assert torch.allclose(R.T @ R, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert torch.linalg.det(R).item() == pytest.approx(1.0, abs=1e-12)
    assert torch.allclose(R[:, 2], (target - eye) / (target - eye).norm(), atol=1e-12)
    assert R[:, 1] @ up < 0  # image y points down, against the world up
    assert torch.equal(T[:3, 3], eye)


def test_from_fov_focal_lengths() -> None:
    cam = Camera.from_fov(torch.eye(4), 480, 768, 90.0)
    assert cam.K[0, 0, 0].item() == pytest.approx(384.0)
    assert cam.K[0, 1, 1].item() == pytest.approx(384.0)  # square pixels by default
    assert cam.K[0, :2, 2].tolist() == [384.0, 240.0]
    cam = Camera.from_fov(torch.eye(4), 480, 832, 120.0, 90.0)
    assert cam.K[0, 0, 0].item() == pytest.approx(416.0 / math.tan(math.radians(60.0)))
    assert cam.K[0, 1, 1].item() == pytest.approx(240.0)


def test_resized_and_cropped_keep_projections_consistent() -> None:
    cam = Camera.from_fov(random_poses(2), 60, 90, 75.0)
    points = cam.backproject(torch.full((2, 60, 90), 3.0, dtype=torch.float64))[:, ::7, ::9].reshape(2, -1, 3)
    for i in range(2):
        uv, _ = cam[i].project(points[i])
        uv_half, _ = cam[i].resized(30, 45).project(points[i])
        assert torch.allclose(uv_half, uv / 2, atol=1e-9)  # pixel edges map to pixel edges
        uv_crop, _ = cam[i].cropped(10, 20, 40, 50).project(points[i])
        assert torch.allclose(uv_crop, uv - torch.tensor([20.0, 10.0], dtype=torch.float64), atol=1e-9)
    cropped = cam.cropped(10, 20, 40, 50)
    assert (cropped.height, cropped.width) == (40, 50)
    with pytest.raises(InvalidInputError):
        cam.cropped(30, 0, 40, 90)
