"""Prefect tasks around the library's per-scene stages.

Transient errors (storage hiccups, a lost actor) retry with exponential backoff; ``PermanentError``
(bad input, bad configuration) fails at once and its message becomes the scene's reason in the catalog.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.tasks import exponential_backoff

from tasks.artifacts import publish_scene_artifact
from tasks.ray_pools import get_pool
from worldstereo.config import Settings
from worldstereo.errors import PermanentError
from worldstereo.inputs import is_input_image, sidecar_keys
from worldstereo.pipeline import scene as stages
from worldstereo.pipeline.local import read_input
from worldstereo.storage.factory import open_store
from worldstereo.storage.keys import output_key, records_prefix
from worldstereo.storage.manifests import Catalog, InputObject, SceneEntry, content_hash
from worldstereo.storage.schemas import InputKind, SceneStatus

RETRIES = 3
_catalog_lock = threading.Lock()  # the flow process is the catalog's single writer


def is_transient(task, task_run, state) -> bool:
    """Retry condition: anything but a ``PermanentError``."""
    try:
        state.result()
    except PermanentError:
        return False
    except BaseException:
        return True
    return False


stage_task = task(retries=RETRIES, retry_delay_seconds=exponential_backoff(backoff_factor=2),
                  retry_jitter_factor=0.5, retry_condition_fn=is_transient, cache_policy=NO_CACHE)


def catalog_update(settings: Settings, scene_id: str, status: SceneStatus, error: str | None = None) -> SceneEntry:
    """Set a scene's status under the process-wide catalog lock."""
    with _catalog_lock:
        return Catalog(open_store(settings.storage), settings.storage.work_bucket).set_status(scene_id, status, error)


def _input_kind(store, bucket: str, key: str) -> InputKind:
    camera_key = sidecar_keys(key)[1]
    if store.exists(bucket, camera_key) and b'"panorama"' in store.get_bytes(bucket, camera_key):
        return InputKind.PANORAMA
    return InputKind.PERSPECTIVE


@task(cache_policy=NO_CACHE, retries=RETRIES, retry_delay_seconds=exponential_backoff(backoff_factor=2),
      retry_condition_fn=is_transient)
def register_inputs(settings: Settings, input_prefix: str = "") -> list[str]:
    """List the input bucket and add new images to the catalog (deduplicated by content hash)."""
    store = open_store(settings.storage)
    bucket = settings.storage.input_bucket
    store.ensure_bucket(bucket)
    inputs = []
    for entry in store.list(bucket, input_prefix):
        if entry.is_prefix or not is_input_image(entry.key):
            continue
        data = store.get_bytes(bucket, entry.key)
        inputs.append(InputObject(entry.key, _input_kind(store, bucket, entry.key), content_hash(data)))
    with _catalog_lock:
        added = Catalog(store, settings.storage.work_bucket).register(inputs)
    get_run_logger().info("%d inputs listed, %d new scenes", len(inputs), len(added))
    return [entry.scene_id for entry in added]


def refresh_input(settings: Settings, entry: SceneEntry) -> None:
    """A replaced input (same key, new bytes) gets its new content hash, and its stages run again from scratch."""
    store = open_store(settings.storage)
    digest = content_hash(store.get_bytes(settings.storage.input_bucket, entry.input_key))
    if digest != entry.content_hash:
        store.delete_prefix(settings.storage.work_bucket, records_prefix(entry.scene_id))
        with _catalog_lock:
            catalog = Catalog(store, settings.storage.work_bucket)
            catalog.upsert([replace(catalog.get(entry.scene_id), content_hash=digest)])


def _context(settings: Settings, scene_id: str) -> stages.SceneContext:
    return stages.SceneContext(open_store(settings.storage), settings.storage.work_bucket, scene_id, settings)


@stage_task(task_run_name="init-{scene_id}")
def init_stage(settings: Settings, scene_id: str, input_key: str) -> None:
    """Read and validate the input, estimate depth on the depth pool, build the initial cache and plan."""
    ctx = _context(settings, scene_id)
    if ctx.is_done(stages.INIT):
        return
    scene = read_input(ctx.store, settings.storage.input_bucket, input_key, settings)
    depth = get_pool("depth", settings.depth_backend, settings)
    stages.run_init(ctx, scene, depth.method("estimate"))


@stage_task(task_run_name="{trajectory}-{scene_id}")
def trajectory_stage(settings: Settings, scene_id: str, trajectory: str, names: list[str]) -> None:
    """One trajectory; generation and reconstruction run on their actor pools."""
    ctx = _context(settings, scene_id)
    if ctx.is_done(stages.TRAJECTORY, trajectory):
        return
    generator = get_pool("generator", settings.generator, settings)
    reconstructor = get_pool("reconstructor", settings.reconstructor, settings)
    stages.run_trajectory(ctx, trajectory, generator.method("generate"), reconstructor.method("reconstruct"), names)


@stage_task(task_run_name="export-{scene_id}")
def export_stage(settings: Settings, scene_id: str, names: list[str]) -> None:
    """Fused cloud and every export format."""
    from worldstereo.pipeline.exports import run_export

    ctx = _context(settings, scene_id)
    if not ctx.is_done(stages.EXPORT):
        run_export(ctx, names)


@dataclass(frozen=True)
class SceneOutcome:
    """One row of the batch table."""

    scene_id: str
    input_key: str
    status: str
    duration_s: float
    error: str | None
    outputs: str

    def row(self) -> dict:
        return {"scene": self.scene_id, "input": self.input_key, "status": self.status,
                "duration_s": round(self.duration_s, 2), "error": self.error or "", "outputs": self.outputs}


@task(cache_policy=NO_CACHE, task_run_name="scene-{entry.scene_id}")
def process_scene(settings: Settings, entry: SceneEntry) -> SceneOutcome:
    """All stages of one scene in order; failures are recorded in the catalog, never raised."""
    started = time.perf_counter()
    if entry.status is SceneStatus.RUNNING:  # left running by an interrupted batch
        catalog_update(settings, entry.scene_id, SceneStatus.PENDING)
    catalog_update(settings, entry.scene_id, SceneStatus.RUNNING)
    outputs = f"{settings.storage.work_bucket}/{output_key(entry.scene_id, 'exports')}/"
    try:
        refresh_input(settings, entry)
        init_stage(settings, entry.scene_id, entry.input_key)
        names = stages.trajectory_names(_context(settings, entry.scene_id))
        for name in names:
            trajectory_stage(settings, entry.scene_id, name, names)
        export_stage(settings, entry.scene_id, names)
        publish_scene_artifact(settings, entry.scene_id)
    except Exception as exc:  # the batch goes on: the reason goes to the catalog
        reason = f"{type(exc).__name__}: {exc}"
        get_run_logger().error("scene %s failed: %s", entry.scene_id, reason)
        catalog_update(settings, entry.scene_id, SceneStatus.FAILED, reason[:2000])
        return SceneOutcome(entry.scene_id, entry.input_key, "failed", time.perf_counter() - started, reason, "")
    catalog_update(settings, entry.scene_id, SceneStatus.DONE)
    return SceneOutcome(entry.scene_id, entry.input_key, "done", time.perf_counter() - started, None, outputs)

