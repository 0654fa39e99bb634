"""Clips follow the generator: a trajectory planned at N poses is generated, conditioned and kept at the clip's
poses only, with the paper's or the release's memory rules."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch
from typer.testing import CliRunner

from worldstereo.config import GeneratorSettings, MemorySettings, Settings, StorageSettings, TrajectorySettings
from worldstereo.errors import InvalidInputError
from worldstereo.pipeline import scene as stages
from worldstereo.pipeline.clips import clip_indices, clip_length
from worldstereo.pipeline.local import read_local_input
from worldstereo.pipeline.registry import make_backends
from worldstereo.storage.factory import open_store
from worldstereo.synthetic.samples import write_samples

SCENES = Path(__file__).parent / "fixtures" / "release_scenes"


def test_clip_indices_and_length():
    assert clip_indices(81, 21).tolist() == list(range(0, 81, 4))
    assert clip_indices(9, 9).tolist() == list(range(9))
    with pytest.raises(InvalidInputError):
        clip_indices(5, 9)
    assert clip_length(Settings(), 81) == 81
    assert clip_length(Settings(generation=GeneratorSettings(clip_frames=21)), 81) == 21
    assert clip_length(Settings(generation=GeneratorSettings(clip_frames=21)), 9) == 9


@pytest.mark.parametrize("rules", ["paper", "release"])
def test_a_trajectory_runs_at_the_clip_poses(tmp_path: Path, rules: str, one_thread: None):
    settings = Settings(storage=StorageSettings(backend="local", root=tmp_path / "store"),
                        trajectory=TrajectorySettings(planner="presets", num_frames=9), resolution_scale=0.1,
                        generation=GeneratorSettings(clip_frames=5), memory=MemorySettings(rules=rules))
    image = write_samples(tmp_path / "in", height=48, width=64, panorama_height=32)[0]
    depth, generator, reconstructor = make_backends(settings)
    ctx = stages.SceneContext(open_store(settings.storage), settings.storage.work_bucket, "room", settings)
    stages.run_init(ctx, read_local_input(image, settings), depth.estimate)
    names = stages.trajectory_names(ctx)
    planned = ctx.states.load(stages.INIT).plans[0][2].cameras
    request = stages.build_request(ctx, ctx.states.load(stages.INIT), names[0], generator.clip_frames(len(planned)))
    assert torch.allclose(request.cameras.c2w.double(), planned.c2w[[0, 2, 4, 6, 8]], atol=1e-6)
    assert len(request.ggm.rgb) == 5
    references = request.references
    assert references.target_pointmaps is None and references.reference_pointmaps is None  # the oracle reads none
    paper = settings.model_copy(update={"generator": "worldstereo-paper"})
    paper_ctx = stages.SceneContext(ctx.store, ctx.bucket, "room", paper)
    paired = stages.build_request(paper_ctx, ctx.states.load(stages.INIT), names[0], 5).references
    assert paired.target_pointmaps.shape == paired.reference_pointmaps.shape == (*paired.images.shape[:3], 3)
    if rules == "release":
        assert references.ref_index is not None and torch.equal(references.target_indices, references.ref_index + 1)
        assert len(references.images) <= 8 and (references.ref_index.diff() > 0).all()
    else:
        assert references.ref_index is None and len(references.target_indices) == 2  # 9 planned poses / 4
    stages.run_trajectory(ctx, names[0], generator.generate, reconstructor.reconstruct, names, generator.clip_frames)
    state = ctx.states.load(names[0])
    added = [f.index for f in state.bank.frames if f.source == names[0]]
    assert added == ([1, 2, 3, 4] if rules == "release" else [0, 2, 4])  # paper: planned keyframes 0, 4, 8
    assert torch.allclose(state.plans[0][2].cameras.c2w, request.cameras.c2w.double())
    cameras = json.loads(ctx.store.get_bytes(ctx.bucket, ctx.states.key(names[0], "cameras.json")))
    assert len(cameras["requested"]["w2c"]) == 5


def test_plan_command_writes_cameras_and_a_picture(tmp_path: Path):
    from worldstereo.cli import app

    result = CliRunner().invoke(app, ["plan", str(SCENES / "reconstruction" / "bicycle"), "--preset-set", "release",
                                      "--frames", "21", "--scale", "0.1", "--json", str(tmp_path / "plan.json"),
                                      "--png", str(tmp_path / "plan.png")])
    assert result.exit_code == 0, result.output
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert [t["name"] for t in plan["trajectories"]] == ["eloop", "up", "right", "left"]
    assert all(len(t["w2c"]) == len(t["intrinsics"]) == 21 for t in plan["trajectories"])
    picture = iio.imread(tmp_path / "plan.png")
    assert picture.shape == (256, 256, 3) and picture.max() > 0
