"""Plücker rays and aspect buckets on ground truth."""

from __future__ import annotations

import math

import pytest
import torch

from worldstereo.geometry.buckets import BUCKETS_480P, fit_to_bucket, nearest_bucket
from worldstereo.geometry.camera import Camera, look_at
from worldstereo.geometry.plucker import normalize_cameras, plucker_rays


def orbit(n: int = 6) -> Camera:
    angles = torch.linspace(0, math.pi / 2, n, dtype=torch.float64)
    eyes = torch.stack([3 * angles.sin(), 0.4 * angles, -3 * angles.cos()], dim=-1) + torch.tensor([0.5, -1.0, 2.0])
    target = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64).expand(n, 3)
    c2w = look_at(eyes, target, torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64))
    return Camera.from_fov(c2w, 9, 14, 65.0)


def random_similarity(seed: int) -> tuple[torch.Tensor, float]:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    Q = Q * torch.linalg.det(Q)
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3], T[:3, 3] = Q, torch.randn(3, generator=g, dtype=torch.float64) * 5
    return T, 0.1 + 3 * torch.rand(1, generator=g).item()


def test_normalize_cameras_definition() -> None:
    c2w = normalize_cameras(orbit().c2w)
    assert torch.allclose(c2w[0, :3, :3], torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(c2w[:, :3, 3].mean(dim=0), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert c2w[0, :3, 3].norm().item() == pytest.approx(2.0, abs=1e-12)
    rotations = c2w[:, :3, :3]
    assert torch.allclose(rotations @ rotations.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(6, 3, 3), atol=1e-12)


def test_normalize_cameras_degenerate_trajectories() -> None:
    still = torch.eye(4, dtype=torch.float64).repeat(4, 1, 1)
    assert torch.allclose(normalize_cameras(still), still)  # pure rotation: every centre stays at the origin
    symmetric = still.clone()
    symmetric[:, 0, 3] = torch.tensor([0.0, -1.0, 1.0, 0.0])  # first camera at the mean
    distances = normalize_cameras(symmetric)[:, :3, 3].norm(dim=-1)
    assert distances.max().item() == pytest.approx(2.0)


def test_plucker_directions_are_unit_and_moments_invariant_along_rays() -> None:
    cam = orbit()
    rays = plucker_rays(cam, normalize=False)
    assert rays.shape == (6, 6, 9, 14)
    d, m = rays[:, :3].permute(0, 2, 3, 1), rays[:, 3:].permute(0, 2, 3, 1)
    assert torch.allclose(d.norm(dim=-1), torch.ones(6, 9, 14, dtype=torch.float64), atol=1e-12)
    depth = 0.3 + torch.rand(6, 9, 14, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 5
    points = cam.backproject(depth)  # points on each pixel's ray
    assert torch.allclose(torch.linalg.cross(points, d, dim=-1), m, atol=1e-10)
    assert torch.allclose((d * m).sum(-1), torch.zeros(6, 9, 14, dtype=torch.float64), atol=1e-12)


def test_normalised_plucker_ignores_the_world_frame_and_scale() -> None:
    cam = orbit()
    T, s = random_similarity(7)
    moved = cam.c2w.clone()
    moved[:, :3, :3] = T[:3, :3] @ cam.c2w[:, :3, :3]
    moved[:, :3, 3] = s * cam.centers @ T[:3, :3].T + T[:3, 3]
    a = plucker_rays(cam)
    b = plucker_rays(Camera(cam.K, moved, cam.height, cam.width))
    assert torch.allclose(a, b, atol=1e-10)
    first = torch.nn.functional.normalize(torch.linalg.inv(cam.K[0]) @ cam.pixel_grid()[..., None], dim=-2)[..., 0]
    assert torch.allclose(a[0, :3].permute(1, 2, 0), first, atol=1e-12)  # first camera is the identity


@pytest.mark.parametrize(
    ("size", "bucket"),
    [((480, 768), (480, 768)), ((1080, 1920), (480, 768)), ((1920, 1080), (768, 480)), ((1000, 1000), (608, 608)),
     ((700, 800), (576, 640)), ((1024, 720), (720, 512))],
)
def test_nearest_bucket(size: tuple[int, int], bucket: tuple[int, int]) -> None:
    assert nearest_bucket(*size) == bucket
    assert bucket in BUCKETS_480P


@pytest.mark.parametrize(("size", "bucket"), [((300, 400), (576, 640)), ((1200, 1500), (608, 608)), ((96, 200), (480, 768))])
def test_fit_to_bucket_keeps_image_content_under_every_projection(size: tuple[int, int], bucket: tuple[int, int]) -> None:
    h, w = size
    camera = Camera.from_fov(look_at(torch.zeros(3), torch.tensor([0.2, 0.1, 1.0]), torch.tensor([0.0, -1.0, 0.0])), h, w, 70.0)
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    image = torch.stack([xs / w, ys / h, torch.full_like(xs, 0.5)], dim=-1)  # linear in pixel coordinates

    fitted, new_camera = fit_to_bucket(image, camera, bucket)
    assert fitted.shape == (*bucket, 3) and (new_camera.height, new_camera.width) == bucket

    g = torch.Generator().manual_seed(0)
    depth = 1 + torch.rand(1, *bucket, generator=g) * 9
    points = new_camera.backproject(depth.to(new_camera.dtype))[0, 4:-4, 4:-4].reshape(-1, 3)
    uv_old, _ = camera.project(points)  # where the scene point was in the original image
    expected = torch.cat([uv_old[0, :, :1] / w, uv_old[0, :, 1:] / h], dim=-1)
    assert torch.allclose(fitted[4:-4, 4:-4, :2].reshape(-1, 2), expected.to(fitted.dtype), atol=1e-4)


def test_fit_to_bucket_uint8_images() -> None:
    camera = Camera.from_fov(torch.eye(4), 240, 384, 60.0)
    image = torch.full((240, 384, 3), 200, dtype=torch.uint8)
    fitted, new_camera = fit_to_bucket(image, camera, (480, 768))
    assert fitted.dtype == torch.uint8 and bool((fitted == 200).all())
    assert torch.allclose(new_camera.K, camera.K * torch.tensor([[2.0], [2.0], [1.0]]))
