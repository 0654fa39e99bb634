"""Prefect tasks around the library's per-scene stages.

Transient errors (storage hiccups, a lost actor) retry with exponential backoff; ``PermanentError``
(bad input, bad configuration) fails at once and its message becomes the scene's reason in the catalog.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.tasks import exponential_backoff

from tasks.artifacts import publish_scene_artifact
from tasks.ray_pools import get_pool
from worldstereo.config import Settings
from worldstereo.errors import PermanentError
from worldstereo.pipeline import scene as stages
from worldstereo.pipeline.local import read_input
from worldstereo.storage.factory import open_store
from worldstereo.storage.keys import output_key, scene_prefix
from worldstereo.storage.manifests import Catalog, SceneEntry
from worldstereo.storage.scan import scan_inputs
from worldstereo.storage.schemas import SceneStatus

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


def catalog_update(settings: Settings, entry: SceneEntry, status: SceneStatus, error: str | None = None) -> SceneEntry:
    """Move a scene from its current row ``entry`` to ``status`` (one small write, under the catalog lock)."""
    with _catalog_lock:
        return Catalog(open_store(settings.storage), settings.storage.work_bucket).advance(entry, status, error)


@task(cache_policy=NO_CACHE, retries=RETRIES, retry_delay_seconds=exponential_backoff(backoff_factor=2),
      retry_condition_fn=is_transient)
def compact_catalog(settings: Settings) -> int:
    """Fold the batch's status changes into the catalog manifest."""
    with _catalog_lock:
        return Catalog(open_store(settings.storage), settings.storage.work_bucket).compact()


@task(cache_policy=NO_CACHE, retries=RETRIES, retry_delay_seconds=exponential_backoff(backoff_factor=2),
      retry_condition_fn=is_transient)
def register_inputs(settings: Settings, input_prefix: str = "") -> list[str]:
    """List the input bucket and register new and changed images; returns the scenes now pending.

    Only images whose listed version differs from the catalog's are read and hashed, so a batch over
    a large, mostly processed bucket costs a listing. A replaced image (same key, new bytes) loses
    its stage records and outputs and runs again from scratch.
    """
    store = open_store(settings.storage)
    bucket, work_bucket = settings.storage.input_bucket, settings.storage.work_bucket
    store.ensure_bucket(bucket)
    with _catalog_lock:
        catalog = Catalog(store, work_bucket)
        scan = scan_inputs(store, bucket, input_prefix, {e.input_key: e.input_version for e in catalog.entries()})
        registration = catalog.register(
            scan.inputs, on_replace=lambda old: store.delete_prefix(work_bucket, scene_prefix(old.scene_id))
        )
    get_run_logger().info("%d inputs listed, %d read, %d new scenes, %d replaced inputs",
                          scan.listed, len(scan.inputs), len(registration.added), len(registration.replaced))
    return registration.scene_ids


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
    stages.run_trajectory(ctx, trajectory, generator.method("generate"), reconstructor.method("reconstruct"), names,
                          generator.method("clip_frames"))


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
        entry = catalog_update(settings, entry, SceneStatus.PENDING)
    entry = catalog_update(settings, entry, SceneStatus.RUNNING)
    outputs = f"{settings.storage.work_bucket}/{output_key(entry.scene_id, 'exports')}/"
    try:
        init_stage(settings, entry.scene_id, entry.input_key)
        names = stages.trajectory_names(_context(settings, entry.scene_id))
        for name in names:
            trajectory_stage(settings, entry.scene_id, name, names)
        export_stage(settings, entry.scene_id, names)
        publish_scene_artifact(settings, entry.scene_id)
    except Exception as exc:  # the batch goes on: the reason goes to the catalog
        reason = f"{type(exc).__name__}: {exc}"
        get_run_logger().error("scene %s failed: %s", entry.scene_id, reason)
        catalog_update(settings, entry, SceneStatus.FAILED, reason[:2000])
        return SceneOutcome(entry.scene_id, entry.input_key, "failed", time.perf_counter() - started, reason, "")
    catalog_update(settings, entry, SceneStatus.DONE)
    return SceneOutcome(entry.scene_id, entry.input_key, "done", time.perf_counter() - started, None, outputs)

