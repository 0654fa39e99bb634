"""Model depth backends from tiny random weights in their hub layouts, end to end through a scene.

DepthPro and Depth-Anything-V2 metric are transformers' real classes; MoGe is ``moge.model.v2``
(installed by the test extra as ``dlr-moge``). A plain photo (no sidecar, no camera file) and a
synthetic panorama run the whole pipeline with each; bad weight directories and strips fail clearly.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_weights import DEPTH_PRO_FOV_DEG, write_depth_anything_metric, write_depth_pro, write_moge

from worldstereo.config import ModelPaths, PanoramaSettings, Settings, StorageSettings, TrajectorySettings
from worldstereo.errors import ConfigurationError, InvalidInputError
from worldstereo.inputs import SceneInput, panorama_document
from worldstereo.pipeline.depth.auto import AutoDepth
from worldstereo.pipeline.depth.depth_anything_metric import DepthAnythingMetricDepth
from worldstereo.pipeline.depth.depth_pro import DepthProDepth
from worldstereo.pipeline.local import process_scene, read_input
from worldstereo.pipeline.registry import make_backend
from worldstereo.storage.factory import open_store
from worldstereo.catalog.manifests import StageRecords
from worldstereo.synthetic import make_scene

HEIGHT, WIDTH = 72, 112


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("weights")
    return {"depth_pro": write_depth_pro(root / "DepthPro-hf"),
            "depth_anything_metric": write_depth_anything_metric(root / "Depth-Anything-V2-Metric-Indoor-Small-hf"),
            "relative": write_depth_anything_metric(root / "Depth-Anything-V2-Small-hf", metric=False),
            "moge": write_moge(root / "moge-2-vits-normal")}


def settings_for(root: Path, depth_backend: str, **models) -> Settings:
    return Settings(storage=StorageSettings(backend="local", root=root), device="cpu", depth_backend=depth_backend,
                    models=ModelPaths(**models), generator="warp", resolution_scale=0.25,
                    trajectory=TrajectorySettings(planner="presets", num_frames=5, order=("orbit",)),
                    panorama=PanoramaSettings(start_views=1))


def _encode(rgb: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=fmt)
    return buffer.getvalue()


def photo_jpeg() -> bytes:
    """A render of the synthetic room as an ordinary JPEG: no depth sidecar, no camera file."""
    rgb = make_scene("room", 0).render(make_scene("room", 0).input_camera(HEIGHT, WIDTH)).rgb[0]
    return _encode((rgb.numpy() * 255).round().astype(np.uint8), "JPEG")


def run(settings: Settings, name: str, image: bytes, camera: dict | None = None) -> dict:
    store = open_store(settings.storage)
    bucket = settings.storage.input_bucket
    if camera is not None:
        store.put_bytes(bucket, f"{name}.camera.json", json.dumps(camera).encode())
    store.put_bytes(bucket, name + (".png" if camera else ".jpg"), image)
    scene = read_input(store, bucket, name + (".png" if camera else ".jpg"), settings)
    return process_scene(store, name, scene, settings)


def panorama_png() -> tuple[bytes, dict]:
    rgb, distance = make_scene("panorama360", 0).render_panorama(48, 96)
    return _encode((rgb.numpy() * 255).round().astype(np.uint8), "PNG"), panorama_document(*distance.shape)


# --- a plain photo, end to end ---------------------------------------------------------------------------
def test_plain_jpeg_completes_with_depth_pro_and_its_focal(tmp_path, weights):
    settings = settings_for(tmp_path, "depth-pro", depth_pro=weights["depth_pro"])
    summary = run(settings, "photo", photo_jpeg())
    depth = summary["init"]["depth"]
    assert depth["backend"] == "depth-pro" and depth["intrinsics"] == "depth-pro"
    assert depth["focal_px"] == pytest.approx(0.5 * WIDTH / math.tan(math.radians(DEPTH_PRO_FOV_DEG) / 2))
    assert depth["fov_x_deg"] == pytest.approx(DEPTH_PRO_FOV_DEG)
    assert list(summary["trajectories"]) == ["orbit"] and summary["fused_points"] > 100


def test_plain_jpeg_completes_with_depth_anything_metric_at_the_default_fov(tmp_path, weights):
    settings = settings_for(tmp_path, "auto", depth_anything_metric=weights["depth_anything_metric"])
    summary = run(settings, "photo", photo_jpeg())
    depth = summary["init"]["depth"]
    assert depth["backend"] == "depth-anything-metric" and depth["intrinsics"] == "default-fov"
    assert depth["fov_x_deg"] == pytest.approx(settings.default_fov_deg)
    assert summary["fused_points"] > 100


@pytest.mark.parametrize("backend", ["depth-pro", "depth-anything-metric", "moge"])
def test_panorama_completes_with_each_backend(tmp_path, weights, backend):
    field = backend.replace("-", "_")
    settings = settings_for(tmp_path, backend, **{field: weights[field]})
    image, camera = panorama_png()
    summary = run(settings, "pano", image, camera)
    assert summary["kind"] == "panorama" and summary["init"]["depth"]["intrinsics"] == "icosahedron-views"
    assert summary["init"]["depth"]["views"] == 12
    assert list(summary["trajectories"]) == ["v0_orbit"] and summary["fused_points"] > 100


# --- intrinsics ----------------------------------------------------------------------------------------
def test_camera_file_focal_wins_over_the_fov_head(weights):
    settings = Settings(device="cpu", models=ModelPaths(depth_pro=weights["depth_pro"]))
    scene = make_scene("room", 0)
    camera = scene.input_camera(HEIGHT, WIDTH)
    given = SceneInput("perspective", scene.render(camera).rgb[0], None, camera, None)
    plain = SceneInput("perspective", given.rgb, None, None, None)
    backend = DepthProDepth(settings)
    with_file, without = backend.estimate(given), backend.estimate(plain)
    assert with_file.info["intrinsics"] == "camera-file" and torch.equal(with_file.camera.K, camera.K)
    # metric depth is f / (W · inverse): it scales with the focal length used
    ratio = with_file.depth / without.depth
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(camera.K[0, 0, 0]) / without.info["focal_px"]))


def test_depth_anything_metric_takes_its_focal_from_depth_pro_when_configured(weights):
    settings = Settings(device="cpu", models=ModelPaths(depth_pro=weights["depth_pro"],
                                                        depth_anything_metric=weights["depth_anything_metric"]))
    estimate = DepthAnythingMetricDepth(settings).estimate(SceneInput("perspective", torch.rand(40, 64, 3), None, None, None))
    assert estimate.info["intrinsics"] == "depth-pro"
    assert estimate.info["fov_x_deg"] == pytest.approx(DEPTH_PRO_FOV_DEG)
    assert bool((estimate.depth > 0).all() and (estimate.depth <= 20).all())  # the checkpoint's max_depth


def test_max_depth_setting_overrides_the_checkpoint(weights):
    settings = Settings(device="cpu", max_depth=5, models=ModelPaths(depth_anything_metric=weights["depth_anything_metric"]))
    estimate = DepthAnythingMetricDepth(settings).estimate(SceneInput("perspective", torch.rand(40, 64, 3), None, None, None))
    assert bool((estimate.depth <= 5).all())


# --- auto ----------------------------------------------------------------------------------------------
def test_auto_prefers_the_sidecar_then_the_first_configured_model(weights):
    settings = Settings(device="cpu", models=ModelPaths(depth_anything_metric=weights["depth_anything_metric"],
                                                        moge=weights["moge"]))
    auto = AutoDepth(settings)
    sidecar = torch.full((40, 64), 3.0, dtype=torch.float64)
    assert auto.estimate(SceneInput("perspective", torch.rand(40, 64, 3), sidecar, None, None)).info["backend"] == "sidecar"
    assert auto.model is None  # nothing loaded for sidecar inputs
    plain = SceneInput("perspective", torch.rand(40, 64, 3), None, None, None)
    assert auto.estimate(plain).info["backend"] == "depth-anything-metric"


def test_auto_without_sidecar_or_model_names_the_settings():
    with pytest.raises(InvalidInputError) as error:
        AutoDepth(Settings(device="cpu")).estimate(SceneInput("perspective", torch.rand(40, 64, 3), None, None, None))
    for setting in ("WORLDSTEREO_MODELS__DEPTH_PRO", "WORLDSTEREO_MODELS__DEPTH_ANYTHING_METRIC", "WORLDSTEREO_MODELS__MOGE"):
        assert setting in str(error.value)


# --- bad weights and bad photos fail the scene with a reason ---------------------------------------------
def _bad_dirs(root: Path, weights: dict[str, Path]) -> dict[str, Path | None]:
    empty = root / "empty"
    empty.mkdir()
    garbage = root / "garbage"
    garbage.mkdir()
    (garbage / "config.json").write_text("{not json")
    (garbage / "model.safetensors").write_bytes(b"not safetensors")
    truncated = root / "truncated"
    truncated.mkdir()
    (truncated / "config.json").write_text((weights["depth_pro"] / "config.json").read_text())
    (truncated / "model.safetensors").write_bytes((weights["depth_pro"] / "model.safetensors").read_bytes()[:1000])
    return {"unset": None, "missing": root / "nowhere", "empty": empty, "garbage": garbage,
            "truncated": truncated, "another-model": weights["depth_anything_metric"]}


@pytest.mark.parametrize("case", ["unset", "missing", "empty", "garbage", "truncated", "another-model"])
def test_bad_weight_directories_fail_the_scene_naming_the_setting(tmp_path, weights, case):
    path = _bad_dirs(tmp_path, weights)[case]
    settings = settings_for(tmp_path, "depth-pro", depth_pro=path)
    with pytest.raises(ConfigurationError, match="WORLDSTEREO_MODELS__DEPTH_PRO"):
        run(settings, "photo", photo_jpeg())
    assert StageRecords(open_store(settings.storage), settings.storage.work_bucket).records("photo") == []


def test_a_relative_depth_checkpoint_is_refused(weights):
    settings = Settings(device="cpu", models=ModelPaths(depth_anything_metric=weights["relative"]))
    with pytest.raises(ConfigurationError, match="WORLDSTEREO_MODELS__DEPTH_ANYTHING_METRIC.*relative"):
        make_backend("depth", "depth-anything-metric", settings).setup()


@pytest.mark.parametrize("size", [(2, 4000), (40, 1000)])
def test_a_strip_fails_with_a_clear_reason(tmp_path, weights, size):
    settings = settings_for(tmp_path, "depth-pro", depth_pro=weights["depth_pro"])
    strip = (np.random.default_rng(0).random((*size, 3)) * 255).astype(np.uint8)
    with pytest.raises(InvalidInputError, match=r"too small|strip"):
        run(settings, "strip", _encode(strip, "JPEG"))


def test_config_command_shows_which_weights_are_configured(weights, monkeypatch):
    from typer.testing import CliRunner

    from worldstereo.cli import app

    monkeypatch.setenv("WORLDSTEREO_MODELS__DEPTH_PRO", str(weights["depth_pro"]))
    monkeypatch.setenv("WORLDSTEREO_MODELS__DEPTH_ANYTHING_3", str(weights["depth_pro"].parent / "nowhere"))
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)["weights"]
    assert report["WORLDSTEREO_MODELS__DEPTH_PRO"] == f"ok: {weights['depth_pro']}"
    assert report["WORLDSTEREO_MODELS__DEPTH_ANYTHING_METRIC"] == "not set"
    assert report["WORLDSTEREO_MODELS__DEPTH_ANYTHING_3"].startswith("unusable: WORLDSTEREO_MODELS__DEPTH_ANYTHING_3=")


def test_moge_estimates_the_intrinsics_of_a_plain_photo(weights, one_thread):
    settings = Settings(device="cpu", models=ModelPaths(moge=weights["moge"]))
    estimate = make_backend("depth", "moge", settings).estimate(SceneInput("perspective", torch.rand(40, 64, 3), None, None, None))
    assert estimate.info["backend"] == "moge" and estimate.info["intrinsics"] == "moge"
    assert estimate.info["focal_px"] == pytest.approx(float(estimate.camera.K[0, 0, 0]))
    assert estimate.info["focal_px"] > 0
    torch.testing.assert_close(estimate.camera.K[0, :2, 2], torch.tensor([32.0, 20.0], dtype=torch.float64))
    assert bool((estimate.depth > 0).all())
