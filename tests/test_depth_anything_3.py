"""The ``depth-anything-3`` reconstructor: Sim(3) back to the world, priors, confidence, weights, end to end.

``OracleDA3`` stands in for the network with its call interface and answers the synthetic scene's true
depth and cameras, moved into a random frame at a random scale; the reconstructor must put the fused
cloud back on the ground truth. The real network (the ``da3-small`` preset, random weights, saved in the
hub layout) runs the pipeline end to end.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from tiny_weights import write_depth_anything_3

from worldstereo.config import ModelPaths, Settings, StorageSettings, TrajectorySettings
from worldstereo.errors import ConfigurationError
from worldstereo.evaluation.ground_truth import visible_surface
from worldstereo.evaluation.pointcloud_metrics import point_cloud_scores, tau_from_extent
from worldstereo.geometry.align import Sim3
from worldstereo.geometry.camera import rigid_inverse
from worldstereo.pipeline import scene as stages
from worldstereo.pipeline.local import process_scene, read_local_input
from worldstereo.pipeline.reconstructors.depth_anything_3 import (
    DA3Prediction,
    DepthAnything3Reconstructor,
    fit_cameras,
    normalised_priors,
)
from worldstereo.pipeline.registry import make_backends
from worldstereo.pipeline.runner import run_scene
from worldstereo.storage.factory import open_store
from worldstereo.synthetic import make_scene
from worldstereo.synthetic.samples import write_samples

F64 = torch.float64


def random_sim3(seed: int) -> Sim3:
    generator = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=F64))
    R = Q * torch.sign(torch.linalg.det(Q))
    scale = 0.2 + 3 * torch.rand((), generator=generator, dtype=F64)
    return Sim3(scale, R, torch.randn(3, generator=generator, dtype=F64) * 3)


class OracleDA3:
    """``DepthAnything3Net`` of a synthetic scene: the true depth and cameras of the request being reconstructed,
    in a random frame at a random scale (a new one per call). It checks that the requested cameras came as priors."""

    def __init__(self, scene) -> None:
        self.scene, self.request, self.calls = scene, None, 0

    def __call__(self, x, extrinsics, intrinsics) -> dict:
        _, count, _, height, width = x.shape
        assert height % 14 == 0 and width % 14 == 0
        cameras = self.request.cameras.resized(height, width).to(dtype=F64)
        torch.testing.assert_close(extrinsics[0].double(), normalised_priors(cameras.w2c), rtol=0, atol=1e-4)
        torch.testing.assert_close(intrinsics[0].double(), cameras.K, rtol=0, atol=1e-3)
        to_model = random_sim3(self.calls).inverse()
        self.calls += 1
        depth = self.scene.render(cameras).depth
        known = torch.isfinite(depth)
        c2w = to_model.apply_c2w(cameras.c2w)
        return {"depth": torch.where(known, depth * to_model.scale, 0.0)[None].float(),
                "depth_conf": known.float()[None] + 1,
                "extrinsics": rigid_inverse(c2w)[:, :3][None].float(),
                "intrinsics": cameras.K[None].float()}


@pytest.fixture(scope="module")
def room(tmp_path_factory) -> Path:
    return next(p for p in write_samples(tmp_path_factory.mktemp("samples"), height=120, width=192) if p.stem == "room")


def settings_for(root: Path, **update) -> Settings:
    return Settings(storage=StorageSettings(backend="local", root=root), device="cpu", reconstructor="depth-anything-3",
                    trajectory=TrajectorySettings(planner="presets", num_frames=9),
                    resolution_scale=0.25).model_copy(update=update)


def test_oracle_network_puts_the_fused_cloud_on_the_ground_truth(tmp_path, room):
    settings = settings_for(tmp_path)
    store = open_store(settings.storage)
    scene_input = read_local_input(room, settings)
    truth_scene = make_scene("room")
    oracle = OracleDA3(truth_scene)
    reconstructor = DepthAnything3Reconstructor(settings, model=oracle)
    depth, generator, _ = make_backends(settings.model_copy(update={"reconstructor": "rendered-depth"}))

    def reconstruct(video, request):
        oracle.request = request
        return reconstructor.reconstruct(video, request)

    ctx = stages.SceneContext(store, settings.storage.work_bucket, "room", settings)
    for _ in run_scene(ctx, scene_input, depth.estimate, generator.generate, reconstruct):
        pass
    assert oracle.calls == 4  # orbit, up, right, left

    state = ctx.states.load(stages.trajectory_names(ctx)[-1])
    init = ctx.states.load(stages.INIT)
    cameras = [t.cameras for _, _, t in init.plans]
    truth = visible_surface(cameras, [truth_scene.render(c).depth for c in cameras])
    scores = point_cloud_scores(state.cache.points.double(), truth, tau_from_extent(truth, 0.01))
    print(f"\nDA3 oracle room F1 {scores.f1:.4f} AUC {scores.auc:.4f}")
    assert scores.f1 >= 0.95


def test_fit_recovers_the_similarity_and_falls_back_to_depth_when_cameras_do_not_move():
    scene = make_scene("room")
    base = scene.input_camera(28, 42)
    c2w = base.c2w.repeat(5, 1, 1)
    c2w[:, 0, 3] += torch.linspace(0, 0.4, 5, dtype=F64)  # a sideways path (collinear centres)
    cameras = type(base)(base.K.repeat(5, 1, 1), c2w, 28, 42)
    depth = scene.render(cameras).depth
    to_model = random_sim3(7).inverse()
    predicted = DA3Prediction(torch.where(torch.isfinite(depth), depth * to_model.scale, 0.0), torch.ones_like(depth),
                              type(base)(cameras.K, to_model.apply_c2w(cameras.c2w), 28, 42))
    fitted = fit_cameras(predicted, cameras, depth[0])
    expected = to_model.inverse()
    torch.testing.assert_close(fitted.matrix, expected.matrix, rtol=0, atol=1e-8)

    still = type(base)(cameras.K, base.c2w.repeat(5, 1, 1), 28, 42)  # turning on the spot: no baseline
    depth = scene.render(still).depth
    predicted = DA3Prediction(torch.where(torch.isfinite(depth), depth * to_model.scale, 0.0), torch.ones_like(depth),
                              type(base)(still.K, to_model.apply_c2w(still.c2w), 28, 42))
    assert float(fit_cameras(predicted, still, depth[0]).scale) == pytest.approx(1 / float(to_model.scale), rel=1e-9)


def test_priors_are_relative_to_frame_0_at_unit_median_distance():
    poses = torch.stack([random_sim3(i).matrix for i in range(4)])
    poses[:, :3, :3] = torch.stack([random_sim3(i).R for i in range(4)])  # rigid
    w2c = rigid_inverse(poses)
    priors = normalised_priors(w2c)
    torch.testing.assert_close(priors[0], torch.eye(4, dtype=F64), rtol=0, atol=1e-12)
    assert float(rigid_inverse(priors)[:, :3, 3].norm(dim=-1).median()) == pytest.approx(1.0)


# --- the real network ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def da3_weights(tmp_path_factory) -> Path:
    return write_depth_anything_3(tmp_path_factory.mktemp("weights") / "DA3-SMALL")


def test_tiny_real_network_runs_the_pipeline_end_to_end(tmp_path, room, da3_weights, one_thread):
    settings = settings_for(tmp_path, models=ModelPaths(depth_anything_3=da3_weights),
                            trajectory=TrajectorySettings(planner="presets", num_frames=5, order=("orbit",)))
    summary = process_scene(open_store(settings.storage), "room", read_local_input(room, settings), settings)
    assert list(summary["trajectories"]) == ["orbit"]
    assert summary["trajectories"]["orbit"]["points_added"] > 0 and math.isfinite(summary["extent"])


@pytest.mark.parametrize("content", ["missing", "empty", "not-a-preset", "garbage-weights"])
def test_bad_weight_directories_name_the_setting(tmp_path, content):
    path = tmp_path / "DA3"
    if content != "missing":
        path.mkdir()
    if content in ("not-a-preset", "garbage-weights"):
        (path / "config.json").write_text('{"model_name": "da3-tiny"}' if content == "not-a-preset"
                                          else '{"model_name": "da3-small"}')
        (path / "model.safetensors").write_bytes(b"\0" * 64)
    settings = Settings(device="cpu", models=ModelPaths(depth_anything_3=path))
    with pytest.raises(ConfigurationError, match="WORLDSTEREO_MODELS__DEPTH_ANYTHING_3"):
        DepthAnything3Reconstructor(settings).setup()
