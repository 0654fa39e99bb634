"""The release's input folders (``examples/images`` and ``examples/reconstruction``, two of each, images
downscaled, with a depth sidecar) register as one scene each and run through ``worldstereo batch``; each
scene follows its camera.json path (images: its own poses; reconstruction: the shipped preset cameras)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from worldstereo.config import Settings, StorageSettings
from worldstereo.geometry.camera import rigid_inverse
from worldstereo.pipeline.local import read_local_input
from worldstereo.storage import open_store
from worldstereo.storage.keys import output_key, scene_id_from_key
from worldstereo.catalog.scan import scan_inputs
from worldstereo.storage.upload import upload_tree
from worldstereo.synthetic.samples import write_samples

FIXTURES = Path(__file__).parent / "fixtures"
SCENES = FIXTURES / "release_scenes"
SHIPPED = json.loads((FIXTURES / "release_trajectories.json").read_text())["scenes"]
IMAGES = ("photorealistic-indoor-dining_spaces-030", "photorealistic-outdoor-verdant_landscape-050")
RECONSTRUCTION = ("bicycle", "Caterpillar")


def _camera_file(scene: str) -> dict:
    return json.loads((SCENES / "images" / scene / "camera.json").read_text())


def test_images_layout_is_one_custom_path_from_camera_json():
    scene = read_local_input(SCENES / "images" / IMAGES[0] / "image.png", Settings())
    document = _camera_file(IMAGES[0])
    assert not scene.presets and list(scene.paths) == ["camera"]
    w2c = torch.tensor(document["extrinsic"], dtype=torch.float64)
    assert torch.allclose(rigid_inverse(scene.paths["camera"]), w2c, atol=1e-7) and len(w2c) == 81
    assert torch.allclose(scene.camera.K[0], torch.tensor(document["intrinsic"][0], dtype=torch.float64))
    assert torch.allclose(scene.camera.w2c[0], w2c[0], atol=1e-7)
    prompt = json.loads((SCENES / "images" / IMAGES[0] / "prompt.json").read_text())
    assert scene.prompt == prompt["long caption"].strip()


def test_reconstruction_layout_runs_the_presets_from_the_renders_start_camera():
    scene = read_local_input(SCENES / "reconstruction" / "Caterpillar" / "image.png", Settings())
    shipped = SHIPPED["Caterpillar"]
    assert scene.presets and not scene.paths and (scene.height, scene.width) == (32, 56)
    K = torch.tensor(shipped["K"], dtype=torch.float64)
    assert torch.allclose(scene.camera.K[0, 0], K[0] * 56 / shipped["width"])
    assert torch.allclose(scene.camera.K[0, 1], K[1] * 32 / shipped["height"])
    assert torch.allclose(scene.camera.w2c[0], torch.tensor(shipped["start_w2c"], dtype=torch.float64), atol=1e-8)
    assert scene.prompt == json.loads((SCENES / "reconstruction" / "Caterpillar" / "prompt.json").read_text())["prompt"]


def test_a_bucket_with_both_layouts_registers_each_scene_once(tmp_path: Path):
    settings = StorageSettings(root=tmp_path / "store")
    store = open_store(settings)
    store.ensure_bucket(settings.input_bucket)
    write_samples(tmp_path / "flat", height=48, width=64, panorama_height=32)
    upload_tree(store, settings.input_bucket, tmp_path / "flat", "mixed/")
    keys = upload_tree(store, settings.input_bucket, SCENES, "mixed/")
    assert keys == [f"mixed/images/{s}/image.png" for s in IMAGES] + [f"mixed/reconstruction/{s}/image.png" for s in sorted(RECONSTRUCTION)]
    scan = scan_inputs(store, settings.input_bucket, "mixed/", {})
    registered = sorted(i.key for i in scan.inputs)
    assert scan.listed == len(registered) == 7 and len({scene_id_from_key(k) for k in registered}) == 7
    assert {"mixed/object.png", "mixed/room.png", "mixed/panorama.png"} < set(registered)


@pytest.mark.slow
def test_release_folders_run_through_the_batch_and_follow_their_paths(tmp_path: Path, prefect_api: str, monkeypatch):
    from flows.cli import app

    env = {"STORAGE__ROOT": str(tmp_path / "store"), "TRAJECTORY__PRESET_SET": "release",
           "TRAJECTORY__SHRINK_FOR_COLLISIONS": "false", "MEMORY__RULES": "release", "GENERATION__CLIP_FRAMES": "5",
           "RAY__NUM_CPUS": "2"}
    for name, value in env.items():
        monkeypatch.setenv(f"WORLDSTEREO_{name}", value)
    runner = CliRunner()
    uploaded = runner.invoke(app, ["upload", str(SCENES)])
    assert uploaded.exit_code == 0, uploaded.output
    result = runner.invoke(app, ["batch", "--generator", "warp", "--frames", "9", "--scale", "0.1",
                                 "--json", str(tmp_path / "batch.json")])
    assert result.exit_code == 0, result.output
    rows = {r["scene"]: r for r in json.loads((tmp_path / "batch.json").read_text())["scenes"]}
    assert len(rows) == 4 and all(r["status"] == "done" for r in rows.values()), rows
    store, bucket = open_store(StorageSettings(root=tmp_path / "store")), "worldstereo-work"

    def requested(key: str, trajectory: str) -> torch.Tensor:
        cameras = json.loads(store.get_bytes(bucket, output_key(scene_id_from_key(key), trajectory, "cameras.json")))
        return torch.tensor(cameras["requested"]["w2c"], dtype=torch.float64)

    picks = torch.linspace(0, 80, 5).long()  # 81 poses planned at 9 frames: 0, 10, ..., 80; clip of 5: 0, 20, ..., 80
    for scene in IMAGES:
        shipped = torch.tensor(_camera_file(scene)["extrinsic"], dtype=torch.float64)[picks]
        ours = requested(f"images/{scene}/image.png", "camera")
        scale = shipped[0, :3, 3].norm()
        assert ((ours[:, :3, 3] - shipped[:, :3, 3]).norm(dim=-1) / scale).max() < 1e-5
        assert (ours[:, :3, :3] - shipped[:, :3, :3]).abs().max() < 1e-5
    for scene in RECONSTRUCTION:
        data = SHIPPED[scene]
        for trajectory in ("eloop", "up", "right", "left"):
            shipped = torch.tensor(data["w2c"][trajectory], dtype=torch.float64)[torch.linspace(0, 20, 5).long()]
            ours = requested(f"reconstruction/{scene}/image.png", trajectory)
            centres = rigid_inverse(ours)[:, :3, 3] - rigid_inverse(shipped)[:, :3, 3]
            assert (centres.norm(dim=-1) / data["d"]).max() < 1e-5, (scene, trajectory)
            assert (ours[:, :3, :3] - shipped[:, :3, :3]).abs().max() < 1e-5, (scene, trajectory)
        bank = json.loads(store.get_bytes(bucket, output_key(scene_id_from_key(f"reconstruction/{scene}/image.png"),
                                                             "exports", "world_mirror", "cameras.json")))
        assert bank["num_cameras"] == 1 + 4 * 4  # the input, then 4 frames of each 5-frame clip (release rule)
