"""A killed flow process, then a re-run of the batch (not collected by default: run it by name; it did not finish
within 15 minutes on a heavily loaded 2-core machine, so it is kept out of the suite until checked):

    PYTHONPATH=$PWD python -m pytest -q tests/stress_killed_flow.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import ray
from test_flow import ray_cluster, run_small_batch, small_scenes, use_buckets  # noqa: F401  (ray_cluster: a fixture)
from flows.scene_batch import scene_batch
from worldstereo.catalog.manifests import Catalog, StageRecords
from worldstereo.catalog.schemas import SceneStatus
from worldstereo.storage import open_store
from worldstereo.storage.keys import output_key


def test_killed_flow_process_and_a_rerun_finish_the_scene(prefect_api: str, ray_cluster: None,  # noqa: F811
                                                          s3_endpoint: str,
                                                          tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WORLDSTEREO_RAY__CLAIM_TTL_S", "6")  # the killed batch's claim expires quickly
    settings = use_buckets(monkeypatch, s3_endpoint)
    (scene_id,) = small_scenes(settings, tmp_path, 1)
    store, bucket = open_store(settings.storage), settings.storage.work_bucket
    records = StageRecords(store, bucket)
    cluster = ray.get_runtime_context().gcs_address  # the flow process joins the test's cluster as a driver
    batch = subprocess.Popen([sys.executable, "-c", "from test_flow import run_small_batch; run_small_batch()"],
                             cwd=Path(__file__).parent,
                             env=os.environ | {"PREFECT_API_URL": prefect_api, "WORLDSTEREO_RAY__ADDRESS": cluster})
    try:
        while records.read(scene_id, "init") is None and batch.poll() is None:
            time.sleep(0.05)
    finally:
        batch.kill()  # the flow process dies with the scene running, its first stage recorded
        batch.wait()
    init = records.read(scene_id, "init")
    assert init is not None and Catalog(store, bucket).get(scene_id).status is SceneStatus.RUNNING
    time.sleep(6)

    rows = scene_batch(generator="oracle", trajectory={"num_frames": 3, "order": ["orbit"]},
                       overrides={"resolution_scale": 0.25}, rerun_failed=True)

    assert [(row["scene"], row["status"]) for row in rows] == [(scene_id, "done")]
    assert (Catalog(store, bucket).get(scene_id).status, len(records.records(scene_id))) == (SceneStatus.DONE, 3)
    assert records.read(scene_id, "init").finished_at == init.finished_at  # init did not run again
    reference = use_buckets(monkeypatch, s3_endpoint)
    small_scenes(reference, tmp_path / "again", 1)
    assert [row["status"] for row in run_small_batch()] == ["done"]
    key = output_key(scene_id, "exports", "fused.ply")
    assert store.get_bytes(bucket, key) == store.get_bytes(reference.storage.work_bucket, key)
