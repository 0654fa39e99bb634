"""Prefect tasks around the library's per-scene stages.

Transient errors (storage hiccups, a lost actor) retry with exponential backoff; ``PermanentError``
(bad input, bad configuration) fails at once and its message becomes the scene's reason in the catalog.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import ray

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.tasks import exponential_backoff

from tasks.artifacts import publish_scene_artifact
from tasks.errors import plain, readable_reason, underlying
from tasks.ray_pools import get_pools
from tasks.remote_stage import StageOutcome, stage_task_remote
from worldstereo.config import Settings
from worldstereo.errors import PermanentError
from worldstereo.pipeline.runner import Stage, later_stages
from worldstereo.pipeline.scene import INIT, SPLAT
from worldstereo.catalog.claims import Claim, SceneClaims
from worldstereo.storage.factory import open_store
from worldstereo.storage.keys import output_key, scene_prefix
from worldstereo.catalog.manifests import Catalog, SceneEntry
from worldstereo.catalog.scan import scan_inputs
from worldstereo.catalog.schemas import SceneStatus

RETRIES = 3
T = TypeVar("T")


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


def bookkeeping(call: Callable[[], T], attempts: int = 7) -> T:
    """``call()`` retried through a storage outage (1, 2, 4, ... s apart); a permanent error fails at once."""
    for attempt in range(attempts):
        try:
            return call()
        except PermanentError:
            raise
        except Exception as exc:
            if attempt == attempts - 1:
                raise
            get_run_logger().warning("catalog write failed (%s); retrying", readable_reason(exc))
            time.sleep(2**attempt)
    raise AssertionError("unreachable")


def catalog_update(settings: Settings, entry: SceneEntry, status: SceneStatus, error: str | None = None) -> SceneEntry:
    """Move a scene from its current row ``entry`` to ``status`` (one small write of its own)."""
    catalog = Catalog(open_store(settings.storage), settings.storage.work_bucket)
    return bookkeeping(lambda: catalog.advance(entry, status, error))


@task(cache_policy=NO_CACHE, retries=RETRIES, retry_delay_seconds=exponential_backoff(backoff_factor=2),
      retry_condition_fn=is_transient)
def compact_catalog(settings: Settings) -> int:
    """Fold the batch's status changes into the catalog manifest."""
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
    catalog = Catalog(store, work_bucket)
    scan = scan_inputs(store, bucket, input_prefix, {e.input_key: e.input_version for e in catalog.entries()})
    registration = catalog.register(
        scan.inputs, on_replace=lambda old: store.delete_prefix(work_bucket, scene_prefix(old.scene_id))
    )
    get_run_logger().info("%d inputs listed, %d read, %d new scenes, %d replaced inputs",
                          scan.listed, len(scan.inputs), len(registration.added), len(registration.replaced))
    return registration.scene_ids


def splat_gpus(settings: Settings, stage: Stage) -> int:
    """The splat stage asks for a GPU while the cluster has one free (its CPU path otherwise)."""
    if stage.kind != SPLAT or not settings.splat.enabled:
        return 0
    return int(ray.available_resources().get("GPU", 0.0) >= 1)


def _run_on_cluster(settings: Settings, scene_id: str, input_key: str, stage: Stage,
                    names: list[str] | None) -> StageOutcome:
    """Submit the stage as a Ray task and wait for its small outcome; a remote error is raised as itself."""
    pools = get_pools(settings)
    options = {"num_cpus": settings.ray.stage_cpus, "max_retries": settings.ray.stage_retries,
               "retry_exceptions": False, "num_gpus": splat_gpus(settings, stage)}
    ref = stage_task_remote.options(**options).remote(settings, scene_id, input_key, stage, names, pools.handles)
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        get_run_logger().error("stage %s of %s failed on the cluster:\n%s", stage.label, scene_id, plain(str(exc)))
        raise underlying(exc) from None


@stage_task(task_run_name="init-{scene_id}")
def init_stage(settings: Settings, scene_id: str, input_key: str) -> StageOutcome:
    """Read and validate the input, estimate depth, build the initial cache and plan (on the cluster)."""
    return _run_on_cluster(settings, scene_id, input_key, Stage(INIT), None)


@stage_task(task_run_name="{label}-{scene_id}")
def later_stage(settings: Settings, scene_id: str, input_key: str, stage: Stage, names: list[str],
                label: str) -> StageOutcome:
    """One trajectory (generation and reconstruction on the model actors), or the exports (on the cluster)."""
    return _run_on_cluster(settings, scene_id, input_key, stage, names)


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


class ClaimLost(RuntimeError):
    """The scene's claim expired and another batch took it: this batch stops working on the scene."""


class ClaimKeeper:
    """Keeps a held claim alive: renews it every third of its lifetime in the background (so a killed flow
    process frees its scenes within ``ray.claim_ttl_s``); :meth:`check` raises once it was lost."""

    def __init__(self, claims: SceneClaims, claim: Claim) -> None:
        self.claims, self.claim, self.lost = claims, claim, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.claims.ttl_s / 3):
            try:
                renewed = self.claims.renew(self.claim)
            except Exception:  # a storage outage: try again at the next tick, well before expiry
                continue
            if renewed is None:
                self.lost = True
                return
            self.claim = renewed

    def check(self) -> None:
        if self.lost:
            raise ClaimLost(f"the claim on {self.claim.scene_id} expired and another batch took it")

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        if not self.lost:
            bookkeeping(lambda: self.claims.release(self.claim))


@task(cache_policy=NO_CACHE, task_run_name="scene-{entry.scene_id}")
def process_scene(settings: Settings, entry: SceneEntry, owner: str, statuses: list[str]) -> SceneOutcome:
    """All stages of one scene in order, if this batch wins its claim and the scene is still in one of
    ``statuses``; failures are recorded in the catalog, never raised."""
    started = time.perf_counter()
    store, bucket = open_store(settings.storage), settings.storage.work_bucket
    claims = SceneClaims(store, bucket, settings.ray.claim_ttl_s, owner)
    claim = bookkeeping(lambda: claims.take(entry.scene_id))
    if claim is None:
        return SceneOutcome(entry.scene_id, entry.input_key, "skipped", 0.0, "claimed by another batch", "")
    keeper = ClaimKeeper(claims, claim)
    try:
        return _run_claimed(settings, entry, statuses, keeper, started)
    finally:
        keeper.release()


def _run_claimed(settings: Settings, entry: SceneEntry, statuses: list[str], keeper: ClaimKeeper,
                 started: float) -> SceneOutcome:
    store, bucket = open_store(settings.storage), settings.storage.work_bucket
    entry = bookkeeping(lambda: Catalog(store, bucket).get(entry.scene_id))  # as it is now that no one else can change it
    if entry.status.value not in statuses:
        return SceneOutcome(entry.scene_id, entry.input_key, "skipped", 0.0, f"already {entry.status.value}", "")
    if entry.status is SceneStatus.RUNNING:  # left running by an interrupted batch
        entry = catalog_update(settings, entry, SceneStatus.PENDING)
    entry = catalog_update(settings, entry, SceneStatus.RUNNING)
    outputs = f"{bucket}/{output_key(entry.scene_id, 'exports')}/"
    try:
        names = init_stage(settings, entry.scene_id, entry.input_key).names
        for stage in later_stages(names):
            keeper.check()
            outcome = later_stage(settings, entry.scene_id, entry.input_key, stage, names, stage.label)
        publish_scene_artifact(entry.scene_id, outcome.markdown)
    except ClaimLost as exc:
        return SceneOutcome(entry.scene_id, entry.input_key, "skipped", time.perf_counter() - started, str(exc), "")
    except Exception as exc:  # the batch goes on: the reason goes to the catalog
        reason = readable_reason(exc)
        get_run_logger().error("scene %s failed: %s", entry.scene_id, reason)
        catalog_update(settings, entry, SceneStatus.FAILED, reason)
        return SceneOutcome(entry.scene_id, entry.input_key, "failed", time.perf_counter() - started, reason, "")
    catalog_update(settings, entry, SceneStatus.DONE)
    return SceneOutcome(entry.scene_id, entry.input_key, "done", time.perf_counter() - started, None, outputs)
