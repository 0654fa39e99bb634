"""MoGe depth backend and the icosahedron panorama merge, against exact synthetic geometry.

``GroundTruthMoGe`` stands in for MoGe with the same ``infer``
interface and answers each image with the exact geometry of the camera it was rendered from.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from worldstereo.config import ModelPaths, Settings
from worldstereo.errors import ConfigurationError
from worldstereo.geometry.camera import Camera, look_at
from worldstereo.geometry.spherical import WORLD_UP, equirect_directions
from worldstereo.inputs import SceneInput
from worldstereo.pipeline.depth.moge import SETTING, MoGeDepth
from worldstereo.pipeline.depth.panorama_merge import (
    equirect_to_views,
    icosahedron_cameras,
    icosahedron_directions,
    merge_view_distances,
    view_size,
)
from worldstereo.pipeline.registry import backend_class
from worldstereo.synthetic import make_scene

PANORAMA_HEIGHT, PANORAMA_WIDTH = 96, 192
CPU = Settings(device="cpu")


class GroundTruthMoGe:
    """``MoGeModel.infer`` of a synthetic scene: the ``i``-th image it is given is answered with the exact
    z-depth and normalised intrinsics of ``cameras[i]`` (times ``scales[i]``, a per-view scale error)."""

    def __init__(self, scene, cameras: Camera, scales: torch.Tensor | None = None) -> None:
        self.depth = scene.render(cameras).depth * (1.0 if scales is None else scales[:, None, None])
        self.cameras = cameras
        self.calls: list[float | None] = []
        self._next = 0

    def infer(self, image: torch.Tensor, *, fov_x: float | None = None, apply_mask: bool = True,
              use_fp16: bool = True) -> dict:
        assert not use_fp16  # half precision only on CUDA
        batch = image.shape[0]
        assert image.shape[1:] == (3, self.cameras.height, self.cameras.width)
        assert image.dtype == torch.float32 and 0 <= float(image.min()) and float(image.max()) <= 1
        index = slice(self._next, self._next + batch)
        self._next += batch
        self.calls.append(fov_x)
        K = self.cameras.K[index]
        if fov_x is not None:  # MoGe honours a given field of view
            true_fov = 2 * torch.atan(self.cameras.width / (2 * K[:, 0, 0]))
            assert torch.allclose(true_fov, torch.tensor(math.radians(fov_x), dtype=K.dtype))
        depth = self.depth[index].to(torch.float32)
        mask = torch.isfinite(depth)
        size = torch.tensor([[self.cameras.width], [self.cameras.height], [1.0]], dtype=K.dtype)
        return {
            "depth": torch.where(mask, depth, math.inf) if apply_mask else depth,
            "mask": mask,
            "intrinsics": (K / size).to(torch.float32),
        }


def tilted_up(scene, height: int, width: int) -> Camera:
    """The scene's input view raised to look over the backdrop (a third of the rays hit nothing)."""
    eye = torch.tensor(scene.eye, dtype=torch.float64)
    target = torch.tensor(scene.target, dtype=torch.float64) + torch.tensor([0.0, 0.0, 1.5], dtype=torch.float64)
    c2w = look_at(eye, target, torch.tensor(WORLD_UP, dtype=torch.float64))
    return Camera.from_fov(c2w, height, width, 65.0)


def perspective_input(scene, camera: Camera, *, with_camera: bool) -> SceneInput:
    rgb = scene.render(camera).rgb[0]
    return SceneInput("perspective", rgb, None, camera if with_camera else None, None)


@pytest.fixture(scope="module")
def panorama():
    scene = make_scene("panorama360", 1)
    rgb, distance = scene.render_panorama(PANORAMA_HEIGHT, PANORAMA_WIDTH)
    cameras = icosahedron_cameras(view_size(PANORAMA_WIDTH))
    return scene, SceneInput("panorama", rgb, None, None, None), distance, cameras


def relative_error(estimate: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    return ((estimate - truth).abs() / truth)[torch.isfinite(truth)]


# --- perspective -------------------------------------------------------------------------------
def test_perspective_reproduces_depth_and_intrinsics_without_camera_file():
    scene = make_scene("object", 3)
    camera = tilted_up(scene, 48, 80)  # rays above the backdrop hit nothing: MoGe masks them
    model = GroundTruthMoGe(scene, camera)
    estimate = MoGeDepth(CPU, model=model).estimate(perspective_input(scene, camera, with_camera=False))

    truth = scene.render(camera).depth[0]
    assert model.calls == [None]  # unknown field of view: MoGe estimates it
    assert estimate.depth.dtype == torch.float64 and estimate.depth.shape == (48, 80)
    assert torch.equal(torch.isinf(estimate.depth), torch.isinf(truth)) and bool(torch.isinf(truth).any())
    finite = torch.isfinite(truth)
    torch.testing.assert_close(estimate.depth[finite], truth[finite], rtol=1e-6, atol=0)
    torch.testing.assert_close(estimate.camera.K, camera.K, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(estimate.camera.c2w, torch.eye(4, dtype=torch.float64)[None])
    # the de-normalised intrinsics back-project MoGe's depth onto the scene's surfaces (camera frame)
    local = Camera(camera.K, torch.eye(4, dtype=torch.float64)[None], 48, 80)
    points = estimate.camera.backproject(torch.where(finite, estimate.depth, 0.0)[None])[0]
    torch.testing.assert_close(points[finite], local.backproject(truth.nan_to_num(posinf=0.0)[None])[0][finite],
                               rtol=1e-5, atol=1e-5)


def test_perspective_with_camera_file_gives_moge_its_field_of_view_and_keeps_the_camera():
    scene = make_scene("room", 2)
    camera = scene.input_camera(40, 64)
    model = GroundTruthMoGe(scene, camera)
    estimate = MoGeDepth(CPU, model=model).estimate(perspective_input(scene, camera, with_camera=True))

    assert model.calls[0] == pytest.approx(65.0)  # the synthetic input field of view
    assert estimate.camera is not None and torch.equal(estimate.camera.c2w, camera.c2w)
    torch.testing.assert_close(estimate.depth, scene.render(camera).depth[0], rtol=1e-6, atol=0)


# --- panorama ----------------------------------------------------------------------------------
def test_icosahedron_views_cover_the_sphere():
    axes = icosahedron_directions()
    angles = torch.rad2deg(torch.arccos((axes @ axes.T).clamp(-1, 1)))
    neighbours = angles[(angles > 1) & (angles < 90)]
    assert len(neighbours) == 12 * 5  # every vertex has 5 neighbours 63.43 deg away
    assert torch.allclose(neighbours, torch.full_like(neighbours, 63.4349), atol=1e-3)

    cameras = icosahedron_cameras(16)
    torch.testing.assert_close(cameras.forward, axes)
    directions = equirect_directions(90, 180).reshape(-1, 3)
    uv, z = cameras.project(directions)
    inside = (z > 0) & (uv >= 0).all(-1) & (uv[..., 0] <= 16) & (uv[..., 1] <= 16)
    seen_by = inside.sum(dim=0)
    assert int(seen_by.min()) >= 1 and float(seen_by.float().mean()) > 1.5  # wide overlaps for the scale solve


def test_equirect_to_views_samples_the_right_directions():
    height, width = 64, 128
    directions = equirect_directions(height, width)  # a smooth image whose colour is its own direction
    cameras = icosahedron_cameras(24)
    views = equirect_to_views(directions, cameras)
    rays = cameras.ray_directions()
    expected = rays / rays.norm(dim=-1, keepdim=True)
    error = (views - expected).norm(dim=-1)
    assert views.shape == (12, 24, 24, 3)
    assert float(error.median()) < 2e-3 and float(error.max()) < 3e-2  # bilinear error, poles included


def test_panorama_distance_reproduces_the_scene(panorama):
    scene, scene_input, distance, cameras = panorama
    model = GroundTruthMoGe(scene, cameras)
    estimate = MoGeDepth(CPU, model=model).estimate(scene_input)

    assert estimate.camera is None and estimate.depth.shape == (PANORAMA_HEIGHT, PANORAMA_WIDTH)
    assert model.calls == [90.0] * 3  # 12 views in batches of 4, at their known field of view
    assert bool(torch.isfinite(estimate.depth).all())  # a closed room: every direction hits a wall
    error = relative_error(estimate.depth, distance)
    assert float(error.median()) < 0.01
    assert float((error < 0.05).float().mean()) > 0.95  # larger errors only on depth edges


def test_panorama_log_scale_solve_recovers_scale_ambiguous_views(panorama):
    scene, scene_input, distance, cameras = panorama
    generator = torch.Generator().manual_seed(0)
    scales = torch.exp(torch.empty(12, dtype=torch.float64).uniform_(-1.0, 1.0, generator=generator))
    estimate = MoGeDepth(CPU, model=GroundTruthMoGe(scene, cameras, scales)).estimate(scene_input)

    global_scale = (distance / estimate.depth).median()  # view 0's scale is the gauge
    assert float(global_scale) == pytest.approx(1 / float(scales[0]), rel=1e-3)
    error = relative_error(estimate.depth * global_scale, distance)
    assert float(error.median()) < 0.01
    assert float((error < 0.05).float().mean()) > 0.95


def test_merge_recovers_the_per_view_log_scales(panorama):
    scene, _, _, cameras = panorama
    rays = cameras.ray_directions()
    exact = scene.render(cameras).depth * rays.norm(dim=-1)
    scales = torch.linspace(0.5, 2.0, 12, dtype=torch.float64)
    merged = merge_view_distances(exact * scales[:, None, None], cameras, PANORAMA_HEIGHT, PANORAMA_WIDTH)
    torch.testing.assert_close(merged.log_scales, (scales[0] / scales).log(), rtol=0, atol=2e-3)
    unscaled = merge_view_distances(exact, cameras, PANORAMA_HEIGHT, PANORAMA_WIDTH)
    assert float(unscaled.log_scales.abs().max()) < 2e-3


def test_merge_marks_no_surface_and_unseen_pixels():
    cameras = icosahedron_cameras(16)
    distance = torch.full((12, 16, 16), 2.0, dtype=torch.float64)
    distance[3] = math.inf  # one view sees only sky
    merged = merge_view_distances(distance, cameras, 32, 64)
    sky = torch.isinf(merged.distance)
    assert bool(sky.any()) and bool(torch.isclose(merged.distance[~sky], torch.tensor(2.0, dtype=torch.float64)).all())
    torch.testing.assert_close(merged.log_scales, torch.zeros(12, dtype=torch.float64), rtol=0, atol=1e-12)
    # a direction only view 3 sees is no surface (+inf); with view 3 alone, the rest is unseen (0)
    only = merge_view_distances(distance[3:4], cameras[3], 32, 64).distance
    assert bool(torch.isinf(only).any()) and bool((only == 0).any()) and bool(((only == 0) | torch.isinf(only)).all())


# --- configuration -----------------------------------------------------------------------------
def test_registry_names_the_backend():
    assert backend_class("depth", "moge") is MoGeDepth


def test_missing_weights_setting_says_what_to_set():
    with pytest.raises(ConfigurationError, match=SETTING) as error:
        MoGeDepth(Settings(device="cpu", models=ModelPaths(moge=None))).setup()
    assert "pip install -e" in str(error.value)


def test_missing_checkpoint_names_the_path(tmp_path: Path):
    with pytest.raises(ConfigurationError, match="no MoGe checkpoint") as error:
        MoGeDepth(Settings(device="cpu", models=ModelPaths(moge=tmp_path))).setup()
    assert str(tmp_path / "model.pt") in str(error.value)


def test_missing_package_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    torch.save({"model_config": {"encoder": {}, "neck": {}}, "model": {}}, tmp_path / "model.pt")
    monkeypatch.setitem(sys.modules, "moge", None)  # not importable, whatever is installed
    with pytest.raises(ConfigurationError, match="MoGe package is not importable") as error:
        MoGeDepth(Settings(device="cpu", models=ModelPaths(moge=tmp_path))).setup()
    assert "github.com/microsoft/MoGe" in str(error.value)


def test_a_file_that_is_not_a_checkpoint_is_a_configuration_error(tmp_path: Path):
    (tmp_path / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigurationError, match="not a MoGe checkpoint"):
        MoGeDepth(Settings(device="cpu", models=ModelPaths(moge=tmp_path / "model.pt"))).setup()


def test_merge_accuracy_on_the_synthetic_360_scene(panorama):
    """Figures of the least-squares merge when every view has its own scale (monocular models) and, on top, a
    smooth distortion of its own (a tilt of up to ±5% across the view, a typical monocular error)."""
    scene, _, distance, cameras = panorama
    exact = scene.render(cameras).depth * cameras.ray_directions().norm(dim=-1)
    generator = torch.Generator().manual_seed(3)
    scales = torch.exp(torch.empty(12, dtype=torch.float64).uniform_(-1.0, 1.0, generator=generator))
    tilt = torch.empty(12, 2, dtype=torch.float64).uniform_(-0.05, 0.05, generator=generator)
    u = torch.linspace(-1, 1, cameras.width, dtype=torch.float64)
    warp = 1 + tilt[:, 0, None, None] * u[None, None, :] + tilt[:, 1, None, None] * u[None, :, None]
    figures = {}
    for name, views in (("exact", exact), ("scales", exact * scales[:, None, None]),
                        ("scales+tilt", exact * scales[:, None, None] * warp)):
        merged = merge_view_distances(views, cameras, PANORAMA_HEIGHT, PANORAMA_WIDTH).distance
        merged = merged * (distance / merged).median()  # the global scale is the gauge's
        error = relative_error(merged, distance)
        figures[name] = (float(error.median()), float(error.quantile(0.95)))
    print("\nleast-squares merge, relative distance error (median, p95): "
          + ", ".join(f"{k} {m:.4f} {p:.4f}" for k, (m, p) in figures.items()))
    assert figures["scales"][0] < 0.01 and figures["scales+tilt"][0] < 0.03
