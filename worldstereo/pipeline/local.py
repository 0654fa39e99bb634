"""Run one scene in this process: the library call that the batch flows schedule, and ``worldstereo run-scene``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from worldstereo.config import Settings
from worldstereo.errors import InvalidInputError
from worldstereo.inputs import SceneInput, load_input, release_sidecar_keys, sidecar_keys
from worldstereo.pipeline.registry import make_backends
from worldstereo.pipeline.runner import StageEvent, run_scene
from worldstereo.pipeline.scene import SceneContext
from worldstereo.prompts import prompt_keys
from worldstereo.storage.base import ObjectStore
from worldstereo.storage.keys import output_key, scene_id_from_key


def read_input(store: ObjectStore, bucket: str, key: str, settings: Settings) -> SceneInput:
    """An input image and its sidecars (depth, camera; a release folder's files) from the store, validated."""
    depth_key, camera_key = sidecar_keys(key)
    optional = {k: store.get_bytes(bucket, k) if store.exists(bucket, k) else None for k in (depth_key, camera_key)}
    release = {role: store.get_bytes(bucket, k) for role, k in release_sidecar_keys(key).items() if store.exists(bucket, k)}
    prompt = next(((k, store.get_bytes(bucket, k)) for k in prompt_keys(key) if store.exists(bucket, k)), None)
    return load_input(store.get_bytes(bucket, key), optional[depth_key], optional[camera_key],
                      max_pixels=settings.max_input_pixels, prompt_sidecar=prompt, release_files=release)


def read_local_input(path: Path, settings: Settings) -> SceneInput:
    """An input image and its sidecars (a release folder's files too) from the local file system, validated."""
    if not path.is_file():
        raise InvalidInputError(f"no input image at {path}")
    depth_name, camera_name = (Path(k).name for k in sidecar_keys(path.name))
    optional = [p.read_bytes() if p.is_file() else None for p in (path.with_name(depth_name), path.with_name(camera_name))]
    folder = path.parent
    release = {role: (folder.parent / k).read_bytes()
               for role, k in release_sidecar_keys(f"{folder.name}/{path.name}").items() if (folder.parent / k).is_file()}
    sidecars = [path.with_name(Path(k).name) for k in prompt_keys(path.name)]
    prompt = next(((p.name, p.read_bytes()) for p in sidecars if p.is_file()), None)
    return load_input(path.read_bytes(), *optional, max_pixels=settings.max_input_pixels, prompt_sidecar=prompt,
                      release_files=release)


def process_scene(
    store: ObjectStore,
    scene_id: str,
    scene: SceneInput,
    settings: Settings,
    on_event: Callable[[StageEvent], None] = lambda event: None,
) -> dict:
    """Run or resume every stage of one scene with locally set-up backends; returns the scene summary."""
    depth, generator, reconstructor = make_backends(settings)
    ctx = SceneContext(store, settings.storage.work_bucket, scene_id, settings)
    for event in run_scene(ctx, scene, depth.estimate, generator.generate, reconstructor.reconstruct,
                           generator.clip_frames):
        on_event(event)
    return json.loads(store.get_bytes(ctx.bucket, output_key(scene_id, "summary.json")))


def local_scene_id(path: Path) -> str:
    """Scene id of a local input file (its name, as if it were an input-bucket key)."""
    return scene_id_from_key(path.name)
