"""A generation request built by the pipeline's own stages, for the generator tests."""

from __future__ import annotations

from pathlib import Path

from worldstereo.config import Settings, StorageSettings, TrajectorySettings
from worldstereo.inputs import SceneInput
from worldstereo.pipeline.backends import DepthEstimate, GenerationRequest
from worldstereo.pipeline.scene import SceneContext, build_request, initial_state
from worldstereo.storage.factory import open_store
from worldstereo.synthetic import make_scene


def scene_request(root: Path, frames: int = 5, scale: float = 0.1) -> GenerationRequest:
    """The first trajectory's request of the synthetic room (120x192 input), stored under ``root``, with every
    condition (pointmaps included: built as for the paper generator)."""
    settings = Settings(storage=StorageSettings(backend="local", root=root), resolution_scale=scale, device="cpu",
                        trajectory=TrajectorySettings(planner="presets", num_frames=frames),
                        generator="worldstereo-paper")
    scene = make_scene("room", 0)
    camera = scene.input_camera(120, 192)
    views = scene.render(camera)
    scene_input = SceneInput("perspective", views.rgb[0].float(), views.depth[0].double(), camera,
                             {"kind": "room", "seed": 0})
    ctx = SceneContext(open_store(settings.storage), settings.storage.work_bucket, "room", settings)
    state = initial_state(ctx, scene_input, DepthEstimate(scene_input.depth, camera))
    return build_request(ctx, state, state.plans[0][0])
