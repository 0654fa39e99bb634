"""The ``scene-batch`` flow: register new inputs, fan out per-scene pipelines, report a status table.

Every stage of a scene is a Ray task on the cluster; the flow only submits scene ids and collects small
outcomes. Scenes run concurrently (``concurrency``, by default as many as the cluster has stage slots:
its CPUs not reserved for model actors, ``ray.stage_cpus`` each) and are isolated: a failing scene is recorded
as failed in the catalog with its reason and never fails the others. A scene that is done is not run
again; ``rerun_failed`` picks up failed scenes and scenes left running by an interrupted batch, each
resuming from its last finished stage. Batches may overlap: a scene runs in the batch that wins its claim
(``worldstereo.catalog.claims``); the other batch leaves it out of its table.
"""

from __future__ import annotations

import uuid
from typing import Any

from prefect import flow, get_run_logger
from prefect.context import SettingsContext, get_settings_context
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.artifacts import BatchProgress, publish_batch_table
from tasks.ray_pools import stage_slots
from tasks.stages import SceneOutcome, compact_catalog, process_scene, register_inputs
from worldstereo.config import Settings, load_settings, with_overrides
from worldstereo.storage.factory import open_store
from worldstereo.catalog.manifests import Catalog, SceneEntry
from worldstereo.catalog.schemas import SceneStatus



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


def select_scenes(
    catalog: Catalog, new_ids: list[str], scene_ids: list[str] | None, rerun_failed: bool, limit: int | None
) -> list[SceneEntry]:
    """Runnable scenes (:func:`runnable`), only the named ones if given, at most ``limit``."""
    statuses = runnable(rerun_failed)
    chosen = [e for e in catalog.by_status(*statuses) if scene_ids is None or e.scene_id in scene_ids]
    chosen.sort(key=lambda e: (e.scene_id not in new_ids, e.created_at, e.scene_id))
    return chosen if limit is None else chosen[:limit]


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
    """Process the input bucket's new (and optionally failed) scenes; returns one status row per scene."""
    settings = batch_settings(generator, reconstructor, depth, trajectory, overrides)
    open_store(settings.storage).require_conditional_writes(settings.storage.work_bucket)  # claims rest on them
    logger = get_run_logger()
    new_ids = register_inputs(settings, input_prefix)
    catalog = Catalog(open_store(settings.storage), settings.storage.work_bucket)
    selected = select_scenes(catalog, new_ids, scene_ids, rerun_failed, limit)
    logger.info("%d scenes to run (%d newly registered)", len(selected), len(new_ids))
    progress = BatchProgress(len(selected))
    outcomes: list[SceneOutcome] = []
    in_flight = max(1, min(len(selected), concurrency or stage_slots(settings)))
    with ThreadPoolTaskRunner(max_workers=in_flight) as runner:
        owner, statuses = str(flow_run.get_id() or uuid.uuid4()), [s.value for s in runnable(rerun_failed)]
        futures = [runner.submit(process_scene, {"settings": settings, "entry": entry, "owner": owner,
                                                 "statuses": statuses}) for entry in selected]
        for future in futures:
            outcomes.append(future.result())
            progress.advance()
    if outcomes:
        compact_catalog(settings)
    outcomes = [o for o in outcomes if o.status != "skipped"]  # another batch has (or had) them
    rows = [o.row() for o in outcomes]
    publish_batch_table(rows, flow_run.get_name())
    failed = sum(o.status == "failed" for o in outcomes)
    logger.info("%d done, %d failed", len(outcomes) - failed, failed)
    return rows


def run_scene_batch(**parameters: Any) -> list[dict]:
    """:func:`scene_batch` in this process (the command line, benchmarks), without flow-run heartbeats.

    Heartbeats let automations tell a crashed deployment run from a long one; here they would only hold the
    run's end until the heartbeat thread's next wake-up (up to a second), which Prefect's engine waits for.
    The settings are copied, not rebuilt (``temporary_settings`` re-reads every source: a tenth of a second).
    """
    context = get_settings_context()
    flows = context.settings.flows.model_copy(update={"heartbeat_frequency": None})
    with SettingsContext(profile=context.profile, settings=context.settings.model_copy(update={"flows": flows})):
        return scene_batch(**parameters)
