"""Prefect tasks around the library's per-scene stages.

Transient errors (storage hiccups, a lost actor) retry with exponential backoff; ``PermanentError``
(bad input, bad configuration) fails at once and its message becomes the scene's reason in the catalog.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.tasks import exponential_backoff

from tasks.artifacts import publish_scene_artifact
from tasks.errors import readable_reason
from tasks.remote_stage import StageOutcome, run_on_cluster
from worldstereo.config import Settings
from worldstereo.errors import PermanentError
from worldstereo.pipeline.runner import Stage, following
from worldstereo.pipeline.scene import INIT
from worldstereo.catalog.claims import Claim, SceneClaims
from worldstereo.storage.factory import open_store
from worldstereo.storage.keys import output_key, scene_prefix
from worldstereo.catalog.manifests import Catalog, SceneEntry
from worldstereo.catalog.scan import scan_inputs
from worldstereo.catalog.schemas import SceneStatus

RETRIES = 3  # re-runs of a stage after a transient failure
T = TypeVar("T")


def is_transient(task, task_run, state) -> bool:
    """Retry condition of the batch's bookkeeping tasks: anything but a ``PermanentError``."""
    try:
        state.result()
    except PermanentError:
        return False
    except BaseException:
        return True
    return False


def retrying(call: Callable[[], T], what: str, attempts: int, first_delay_s: float = 1.0) -> T:
    """``call()`` retried after transient failures (``first_delay_s``, then twice as long each time, with jitter);
    a ``PermanentError`` fails at once."""
    for attempt in range(attempts):
        try:
            return call()
        except PermanentError:
            raise
        except Exception as exc:
            if attempt == attempts - 1:
                raise
            get_run_logger().warning("%s failed (%s); retrying", what, readable_reason(exc))
            time.sleep(first_delay_s * 2**attempt * random.uniform(0.75, 1.25))
    raise AssertionError("unreachable")


def bookkeeping(call: Callable[[], T]) -> T:
    """A catalog or claim write, retried through a storage outage (about 1, 2, 4, ... s apart, 2 minutes in all)."""
    return retrying(call, "catalog write", attempts=7)


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
    scan = scan_inputs(store, bucket, input_prefix, catalog.input_versions())
    registration = catalog.register(
        scan.inputs, on_replace=lambda old: store.delete_prefix(work_bucket, scene_prefix(old.scene_id))
    )
    get_run_logger().info("%d inputs listed, %d read, %d new scenes, %d replaced inputs",
                          scan.listed, len(scan.inputs), len(registration.added), len(registration.replaced))
    return registration.scene_ids


def run_stage_retried(settings: Settings, scene_id: str, input_key: str, stage: Stage,
                      names: list[str] | None) -> StageOutcome:
    """One stage on the cluster, run again after transient failures (a lost worker or node, a storage outage, a
    deadline); the stage resumes from what it recorded."""
    return retrying(lambda: run_on_cluster(settings, scene_id, input_key, stage, names),
                    f"stage {stage.label} of {scene_id}", attempts=RETRIES + 1, first_delay_s=2.0)


stage_task_run = task(run_stage_retried, cache_policy=NO_CACHE, task_run_name="{stage.label}-{scene_id}")


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
def process_scene(settings: Settings, entry: SceneEntry, owner: str, statuses: list[str],
                  stage_runs: bool = True) -> SceneOutcome:
    """All stages of one scene in order, if this batch wins its claim and the scene is still in one of
    ``statuses``; failures are recorded in the catalog, never raised. ``entry`` is the scene's row as the batch
    selected it: only the scene's own status changes are read. With ``stage_runs`` each stage is a task run of its
    own and the scene gets a preview artifact; without, stages are logged in the scene's task run."""
    started = time.perf_counter()
    store, bucket = open_store(settings.storage), settings.storage.work_bucket
    claims = SceneClaims(store, bucket, settings.ray.claim_ttl_s, owner)
    claim = bookkeeping(lambda: claims.take(entry.scene_id))
    if claim is None:
        return SceneOutcome(entry.scene_id, entry.input_key, "skipped", 0.0, "claimed by another batch", "")
    keeper = ClaimKeeper(claims, claim)
    try:
        return _run_claimed(settings, entry, statuses, keeper, started, stage_runs)
    finally:
        keeper.release()


def _run_claimed(settings: Settings, entry: SceneEntry, statuses: list[str], keeper: ClaimKeeper,
                 started: float, stage_runs: bool) -> SceneOutcome:
    store, bucket = open_store(settings.storage), settings.storage.work_bucket
    entry = bookkeeping(lambda: Catalog(store, bucket).current(entry))  # as it is now that no one else can change it
    if entry.status.value not in statuses:
        return SceneOutcome(entry.scene_id, entry.input_key, "skipped", 0.0, f"already {entry.status.value}", "")
    if entry.status is SceneStatus.RUNNING:  # left running by an interrupted batch
        entry = catalog_update(settings, entry, SceneStatus.PENDING)
    entry = catalog_update(settings, entry, SceneStatus.RUNNING)
    outputs = f"{bucket}/{output_key(entry.scene_id, 'exports')}/"
    stage_call = stage_task_run if stage_runs else run_stage_retried
    try:
        stage, names = Stage(INIT), None
        while stage is not None:  # trajectories may be chosen one at a time: each outcome brings the plan
            keeper.check()
            outcome = stage_call(settings, entry.scene_id, entry.input_key, stage, names)
            names = outcome.names if outcome.names is not None else names
            get_run_logger().info("scene %s: %s %s in %.1f s", entry.scene_id, stage.label,
                                  "done" if outcome.ran else "already done", outcome.duration_s)
            stage = following(stage, names or [])
        if stage_runs:
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
