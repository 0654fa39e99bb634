"""The ``scene-batch`` flow: register new inputs, run the runnable scenes in shards, report what happened.

The batch reads the catalog once (registration, then selection as Arrow columns) and splits the runnable scenes
into shards of ``batch.shard_size``, each a subflow run with its own scene task runs, status table and
failures; at most ``batch.shards_in_flight`` shards run at once, sharing the batch's scene slots (``concurrency``,
by default the cluster's stage slots), and each shard folds its status changes into the catalog when it ends.
So no flow run holds more than a shard's futures and outcomes, and the parent run shows shard progress and
totals. A scene is handed its catalog row: it reads only its own status changes, never the whole catalog.

Scenes are isolated: a failing scene is recorded as failed in the catalog with its reason and never fails the
others; the run then ends Failed with the counts in its message. A scene that is done is not run again;
``rerun_failed`` picks up failed scenes and scenes left running by an interrupted batch, each resuming from its
last finished stage. Batches may overlap: a scene runs in the batch that wins its claim
(``worldstereo.catalog.claims``); the other batch leaves it out of its table.
"""

from __future__ import annotations

import contextvars
import threading
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from prefect import flow, get_run_logger
from prefect.context import SettingsContext, get_settings_context
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from tasks.artifacts import BatchProgress, publish_batch_summary, publish_shard_table
from tasks.ray_pools import stage_slots
from tasks.stages import SceneOutcome, compact_catalog, process_scene, register_inputs
from worldstereo.catalog.manifests import Catalog, entries_of
from worldstereo.catalog.schemas import CATALOG_SCHEMA, SceneStatus
from worldstereo.config import Settings, load_settings, with_overrides
from worldstereo.storage.factory import open_store

ERRORS_SHOWN = 5  # failure reasons quoted in a run's final message


class ScenesFailed(RuntimeError):
    """The batch ran, and some scenes failed or could not be run: the flow run ends Failed with this message.
    ``rows`` are the batch's status rows, for callers in this process."""

    def __init__(self, message: str, rows: list[dict]) -> None:
        super().__init__(message)
        self.rows = rows


def batch_settings(
    generator: str | None = None,
    reconstructor: str | None = None,
    depth: str | None = None,
    trajectory: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Settings from the environment / YAML with the flow's parameters merged on top (nested dicts merge)."""
    update: dict[str, Any] = dict(overrides or {})
    named = {"generator": generator, "reconstructor": reconstructor, "depth_backend": depth, "trajectory": trajectory}
    update |= {k: v for k, v in named.items() if v is not None}
    return with_overrides(load_settings(), update)


def runnable(rerun_failed: bool) -> list[SceneStatus]:
    """Statuses a batch runs: pending, and failed and interrupted ones too if asked."""
    return [SceneStatus.PENDING] + ([SceneStatus.FAILED, SceneStatus.RUNNING] if rerun_failed else [])


def select_scenes(catalog: Catalog, new_ids: Iterable[str], scene_ids: list[str] | None, rerun_failed: bool,
                  limit: int | None) -> pa.Table:
    """Runnable scenes (:func:`runnable`), only the named ones if given, newly registered first, then by creation
    time and id; at most ``limit``. Columnar: one pass over the catalog whatever its size."""
    table = catalog.select(runnable(rerun_failed), scene_ids)
    fresh = pc.is_in(table["scene_id"], pa.array(list(new_ids), pa.string()))
    table = table.append_column("fresh", fresh).sort_by(
        [("fresh", "descending"), ("created_at", "ascending"), ("scene_id", "ascending")]).drop_columns(["fresh"])
    return table if limit is None else table.slice(0, limit)


@dataclass
class BatchRun:
    """What the shards of one batch share in this process: the scene slots, the progress artifact and the rows."""

    in_flight: int
    progress: BatchProgress
    rows: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # shards that could not finish (e.g. a storage outage)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.slots = threading.BoundedSemaphore(self.in_flight)

    def scene_ended(self, future) -> None:
        """A scene's task run ended: its slot is free and the progress moves."""
        self.slots.release()
        try:
            self.progress.advance()
        except Exception as exc:  # noqa: BLE001  (a progress update never fails a scene)
            get_run_logger().warning("progress not updated: %s", exc)

    def add(self, outcome: SceneOutcome) -> None:
        with self.lock:
            self.rows.append(outcome.row())

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {status: sum(row["status"] == status for row in self.rows) for status in ("done", "failed")}


_runs: dict[str, BatchRun] = {}  # batch token -> its shared state, while the batch runs


@flow(name="scene-batch-shard", flow_run_name="shard-{index}-of-{count}", log_prints=True)
def scene_shard(settings: Settings, entries: list[dict], index: int, count: int, owner: str, statuses: list[str],
                batch: str, stage_runs: bool) -> dict:
    """One shard of a batch: its scenes (catalog rows) under the batch's scene slots, then its status table and the
    fold of its status changes into the catalog. Fails, with the counts, if any of its scenes failed."""
    run = _runs[batch]
    started = time.perf_counter()
    outcomes: list[SceneOutcome] = []
    scenes = entries_of(pa.Table.from_pylist(entries, schema=CATALOG_SCHEMA))
    with ThreadPoolTaskRunner(max_workers=run.in_flight) as runner:
        futures = []
        for entry in scenes:
            run.slots.acquire()
            # quoted: Prefect does not walk the settings model looking for futures in it (a tenth of the task's cost)
            future = runner.submit(process_scene, {"settings": quote(settings), "entry": entry, "owner": owner,
                                                   "statuses": statuses, "stage_runs": stage_runs})
            future.add_done_callback(run.scene_ended)
            futures.append((entry, future))
        for entry, future in futures:
            try:
                outcome = future.result()
            except Exception as exc:  # the scene's bookkeeping itself failed (e.g. the store is down)
                outcome = SceneOutcome(entry.scene_id, entry.input_key, "error", 0.0, f"{type(exc).__name__}: {exc}", "")
            outcomes.append(outcome)
            if outcome.status != "skipped":  # another batch has (or had) them
                run.add(outcome)
    compact_catalog(settings)
    shown = [o for o in outcomes if o.status != "skipped"]
    publish_shard_table([o.row() for o in shown], index, count)
    totals = {status: sum(o.status == status for o in shown) for status in ("done", "failed", "error")}
    totals |= {"scenes": len(shown), "seconds": round(time.perf_counter() - started, 1)}
    bad = [o for o in shown if o.status in ("failed", "error")]
    if bad:
        reasons = "; ".join(f"{o.scene_id}: {o.error}" for o in bad[:ERRORS_SHOWN])
        raise ScenesFailed(f"{len(bad)} of {len(shown)} scenes failed ({reasons})", [o.row() for o in shown])
    return totals


@flow(name="scene-batch", log_prints=True)
def scene_batch(
    input_prefix: str = "",
    limit: int | None = None,
    scene_ids: list[str] | None = None,
    rerun_failed: bool = False,
    generator: str | None = None,
    reconstructor: str | None = None,
    depth: str | None = None,
    trajectory: dict[str, Any] | None = None,
    concurrency: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> list[dict]:
    """Process the input bucket's new (and optionally failed) scenes; returns one status row per scene.

    Ends Failed (:class:`ScenesFailed`, the counts and the first reasons in its message) when a scene failed or a
    shard could not finish; every scene stays resumable.
    """
    settings = batch_settings(generator, reconstructor, depth, trajectory, overrides)
    open_store(settings.storage).require_conditional_writes(settings.storage.work_bucket)  # claims rest on them
    logger = get_run_logger()
    new_ids = register_inputs(settings, input_prefix)
    selected = select_scenes(Catalog(open_store(settings.storage), settings.storage.work_bucket), new_ids,
                             scene_ids, rerun_failed, limit)
    total, size = selected.num_rows, settings.batch.shard_size
    shards = [selected.slice(start, size) for start in range(0, total, size)]
    stage_runs = total <= settings.batch.detail_max_scenes
    logger.info("%d scenes to run (%d newly registered) in %d shards of up to %d", total, len(new_ids), len(shards),
                size)
    in_flight = max(1, min(total, concurrency or stage_slots(settings))) if total else 1
    token = uuid.uuid4().hex
    run = _runs[token] = BatchRun(in_flight, BatchProgress(total))
    owner, statuses = str(flow_run.get_id() or token), [s.value for s in runnable(rerun_failed)]
    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=settings.batch.shards_in_flight) as pool:
            states = [pool.submit(contextvars.copy_context().run, scene_shard, settings, shard.to_pylist(), i + 1,
                                  len(shards), owner, statuses, token, stage_runs, return_state=True)
                      for i, shard in enumerate(shards)]
            for i, state in enumerate(future.result() for future in states):
                if state.is_failed() or state.is_crashed():
                    error = _shard_error(state)
                    if error is not None:
                        run.errors.append(f"shard {i + 1}: {error}")
    finally:
        del _runs[token]
    counts = run.counts() | {"scenes": total, "shards": len(shards), "seconds": round(time.perf_counter() - started, 1)}
    publish_batch_summary(counts, run.errors, flow_run.get_name())
    logger.info("%d done, %d failed", counts["done"], counts["failed"])
    failed = [row for row in run.rows if row["status"] in ("failed", "error")]
    if failed or run.errors:
        reasons = "; ".join([f"{row['scene']}: {row['error']}" for row in failed[:ERRORS_SHOWN]] + run.errors)
        raise ScenesFailed(f"{len(failed)} of {len(run.rows)} scenes failed ({reasons})", run.rows)
    return run.rows


def _shard_error(state) -> str | None:
    """Why a shard's run failed when it was not (only) because of failed scenes; None if it was."""
    try:
        state.result()
    except ScenesFailed:
        return None
    except BaseException as exc:  # noqa: BLE001  (whatever stopped the shard is reported, not raised)
        return f"{type(exc).__name__}: {exc}"
    return state.message or state.name


def run_scene_batch(**parameters: Any) -> list[dict]:
    """:func:`scene_batch` in this process (the command line, benchmarks), without flow-run heartbeats; returns the
    status rows whether or not scenes failed.

    Heartbeats let automations tell a crashed deployment run from a long one; here they would only hold the
    run's end until the heartbeat thread's next wake-up (up to a second), which Prefect's engine waits for.
    The settings are copied, not rebuilt (``temporary_settings`` re-reads every source: a tenth of a second).
    """
    context = get_settings_context()
    flows = context.settings.flows.model_copy(update={"heartbeat_frequency": None})
    with SettingsContext(profile=context.profile, settings=context.settings.model_copy(update={"flows": flows})):
        try:
            return scene_batch(**parameters)
        except ScenesFailed as failed:
            return failed.rows
