"""One scene end to end on synthetic ground truth: panoramas, resume after a kill, exports, bad inputs.

Accuracy of the oracle and warp generators over the whole synthetic suite is in ``test_eval.py``.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest
import torch
from PIL import Image

from worldstereo.config import PanoramaSettings, Settings, StorageSettings, TrajectorySettings
from worldstereo.errors import InvalidInputError, PermanentError
from worldstereo.evaluation.ground_truth import visible_surface
from worldstereo.evaluation.pointcloud_metrics import point_cloud_scores, tau_from_extent
from worldstereo.geometry.camera import rigid_inverse
from worldstereo.pipeline import scene as stages
from worldstereo.pipeline.local import process_scene, read_input
from worldstereo.pipeline.registry import make_backends
from worldstereo.pipeline.runner import run_scene
from worldstereo.storage.factory import open_store
from worldstereo.storage.keys import output_key
from worldstereo.catalog.manifests import StageRecords
from worldstereo.synthetic import make_scene
from worldstereo.synthetic.samples import write_samples

FRAMES = 9


def settings_for(root: Path, **update) -> Settings:
    base = Settings(storage=StorageSettings(backend="local", root=root),
                    trajectory=TrajectorySettings(planner="presets", num_frames=FRAMES), resolution_scale=0.25,
                    panorama=PanoramaSettings(start_views=2))
    return base.model_copy(update=update)


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("samples")
    return {p.stem: p for p in write_samples(directory)}


def upload(settings: Settings, path: Path) -> str:
    store = open_store(settings.storage)
    for file in path.parent.glob(f"{path.stem}.*"):
        store.put_bytes(settings.storage.input_bucket, file.name, file.read_bytes())
    return path.name


def run(settings: Settings, path: Path, scene_id: str) -> dict:
    store = open_store(settings.storage)
    scene = read_input(store, settings.storage.input_bucket, upload(settings, path), settings)
    return process_scene(store, scene_id, scene, settings)


def fused_cloud(settings: Settings, scene_id: str) -> tuple[np.ndarray, np.ndarray]:
    data = open_store(settings.storage).get_bytes(settings.storage.work_bucket,
                                                  output_key(scene_id, "exports", "fused.ply"))
    path = settings.storage.root / f"{scene_id}.ply"
    path.write_bytes(data)
    cloud = o3d.io.read_point_cloud(str(path))
    return np.asarray(cloud.points), np.asarray(cloud.colors)


def ground_truth_scores(settings: Settings, scene_id: str, kind: str):
    """F1 / AUC of the fused cloud against the surface the planned cameras see, tau = 1% of its extent."""
    store = open_store(settings.storage)
    ctx = stages.SceneContext(store, settings.storage.work_bucket, scene_id, settings)
    state = ctx.states.load(stages.INIT)
    scene = make_scene(kind)
    cameras = [t.cameras for _, _, t in state.plans]
    truth = visible_surface(cameras, [scene.render(c).depth for c in cameras])
    points, _ = fused_cloud(settings, scene_id)
    return point_cloud_scores(torch.from_numpy(points), truth, tau_from_extent(truth, 0.01))


def test_panorama_scene_runs_end_to_end(tmp_path, samples):
    settings = settings_for(tmp_path)
    summary = run(settings, samples["panorama"], "pano")
    names = [f"v{v}_{t}" for v in (0, 4) for t in ("orbit", "up", "right", "left")]
    assert list(summary["trajectories"]) == names
    assert summary["bank_frames"] == 27 + len(names) * ((FRAMES - 1) // 4 + 1)
    scores = ground_truth_scores(settings, "pano", "panorama360")
    print(f"\npanorama F1 {scores.f1:.4f} AUC {scores.auc:.4f}")
    assert scores.f1 >= 0.9


def _run_and_die_in_third_trajectory(root: str, image: str) -> None:
    """Child process: run a scene and SIGKILL itself inside the third trajectory's generation."""
    settings = settings_for(Path(root))
    store = open_store(settings.storage)
    scene = read_input(store, settings.storage.input_bucket, image, settings)
    depth, generator, reconstructor = make_backends(settings)

    def generate(request):
        if request.trajectory == "right":
            os.kill(os.getpid(), signal.SIGKILL)
        return generator.generate(request)

    ctx = stages.SceneContext(store, settings.storage.work_bucket, "room", settings)
    for _ in run_scene(ctx, scene, depth.estimate, generate, reconstructor.reconstruct):
        pass


def test_killed_scene_resumes_to_identical_outputs(tmp_path, samples):
    undisturbed = settings_for(tmp_path / "undisturbed")
    run(undisturbed, samples["room"], "room")

    resumed = settings_for(tmp_path / "resumed")
    image = upload(resumed, samples["room"])
    child = multiprocessing.get_context("spawn").Process(
        target=_run_and_die_in_third_trajectory, args=(str(resumed.storage.root), image))
    child.start()
    child.join(timeout=300)
    assert child.exitcode == -signal.SIGKILL
    records = StageRecords(open_store(resumed.storage), resumed.storage.work_bucket)
    assert [(r.stage, r.trajectory) for r in records.records("room")] == [
        ("init", None), ("trajectory", "orbit"), ("trajectory", "up")]

    run(resumed, samples["room"], "room")
    stages_run = [(r.stage, r.trajectory) for r in records.records("room")]
    assert sorted(stages_run, key=str) == sorted(
        [("init", None)] + [("trajectory", t) for t in ("orbit", "up", "right", "left")]
        + [("splat", None), ("export", None)], key=str)
    for a, b in zip(fused_cloud(undisturbed, "room"), fused_cloud(resumed, "room")):
        np.testing.assert_array_equal(a, b)
    get = lambda s, *k: open_store(s.storage).get_bytes(s.storage.work_bucket, output_key("room", *k))  # noqa: E731
    assert get(undisturbed, "exports", "cameras.json") == get(resumed, "exports", "cameras.json")
    assert get(undisturbed, "exports", "colmap", "points3D.txt") == get(resumed, "exports", "colmap", "points3D.txt")


def _quaternion_to_matrix(q: list[float]) -> np.ndarray:
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def test_exports_load_in_their_tools_formats(tmp_path, samples):
    settings = settings_for(tmp_path)
    summary = run(settings, samples["object"], "obj")
    store, bucket = open_store(settings.storage), settings.storage.work_bucket
    get = lambda *k: store.get_bytes(bucket, output_key("obj", *k))  # noqa: E731

    points, colors = fused_cloud(settings, "obj")
    assert len(points) == summary["fused_points"] > 1000 and colors.shape == points.shape

    transforms = json.loads(get("exports", "transforms.json"))
    assert transforms["camera_model"] == "OPENCV" and transforms["ply_file_path"] == "fused.ply"
    assert len(transforms["frames"]) == summary["bank_frames"]
    for frame in transforms["frames"]:
        assert {"file_path", "transform_matrix", "fl_x", "fl_y", "cx", "cy", "w", "h"} <= set(frame)
        assert np.asarray(frame["transform_matrix"]).shape == (4, 4)
        image = Image.open(io.BytesIO(get("exports", frame["file_path"])))
        assert image.size == (frame["w"], frame["h"])

    cameras = {int(line.split()[0]): line.split() for line in get("exports", "colmap", "cameras.txt").decode().splitlines()
               if line and not line.startswith("#")}
    lines = [line for line in get("exports", "colmap", "images.txt").decode().splitlines() if not line.startswith("#")]
    images = [line.split() for line in lines[0::2]]
    assert len(images) == len(transforms["frames"]) == len(cameras)
    for fields, frame in zip(images, transforms["frames"]):
        w2c = np.eye(4)
        w2c[:3, :3] = _quaternion_to_matrix([float(v) for v in fields[1:5]])
        w2c[:3, 3] = [float(v) for v in fields[5:8]]
        c2w_gl = np.asarray(frame["transform_matrix"])
        c2w_cv = c2w_gl @ np.diag([1.0, -1.0, -1.0, 1.0])
        np.testing.assert_allclose(w2c, rigid_inverse(torch.from_numpy(c2w_cv)).numpy(), atol=1e-5)
        model, width, height, fx = cameras[int(fields[8])][1:5]
        assert model == "PINHOLE" and (int(width), int(height)) == (frame["w"], frame["h"])
        assert float(fx) == pytest.approx(frame["fl_x"])
    rows = [line.split() for line in get("exports", "colmap", "points3D.txt").decode().splitlines()
            if not line.startswith("#")]
    assert len(rows) == len(points)
    np.testing.assert_allclose(np.array([[float(v) for v in r[1:4]] for r in rows]), points, atol=1e-5)

    records = StageRecords(store, bucket).records("obj")
    mp4 = [k for r in records for k in r.output_keys if k.endswith(".mp4")]
    assert len(mp4) == 2 * 4


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buffer, format="PNG")
    return buffer.getvalue()


BAD_INPUTS = {
    "not-an-image": (b"%PDF-1.4 not an image at all", None, None),
    "truncated": (_png(64, 64)[:60], None, None),
    "zero-bytes": (b"", None, None),
    "one-pixel": (_png(1, 1), None, None),
    "decompression-bomb": (_bomb(), None, None),
    "missing-depth": (_png(64, 48), None, None),
    "panorama-aspect": (_png(300, 100), _npy(np.ones((100, 300), np.float32)), b'{"kind": "panorama"}'),
    "nan-depth": (_png(64, 48), _npy(np.full((48, 64), np.nan, np.float32)), None),
    "negative-depth": (_png(64, 48), _npy(-np.ones((48, 64), np.float32)), None),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_fail_with_a_typed_error_and_record_nothing(tmp_path, case):
    settings = settings_for(tmp_path)
    store = open_store(settings.storage)
    image, depth, camera = BAD_INPUTS[case]
    store.put_bytes(settings.storage.input_bucket, f"{case}.png", image)
    if depth is not None:
        store.put_bytes(settings.storage.input_bucket, f"{case}.depth.npy", depth)
    if camera is not None:
        store.put_bytes(settings.storage.input_bucket, f"{case}.camera.json", camera)
    with pytest.raises(PermanentError) as error:
        scene = read_input(store, settings.storage.input_bucket, f"{case}.png", settings)
        process_scene(store, case, scene, settings)
    assert isinstance(error.value, InvalidInputError), repr(error.value)
    assert str(error.value)
    assert StageRecords(store, settings.storage.work_bucket).records(case) == []
