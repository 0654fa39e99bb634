"""Scene batches on a Ray cluster of two 1-CPU worker nodes beside a head without CPUs, in a process of its own
(a process joins one Ray cluster only): ``python two_node_batch.py ROOT OUT.json``, with ``PREFECT_API_URL`` set
and ``RAY_TMPDIR`` naming a directory of its own (where the cluster leaves its address, which a plain ``ray.init()``
of any other process on the machine would otherwise join).

First a batch of two scenes on both nodes; then a batch of three during which one worker node is removed once
the first of its stage records is written. Writes to OUT.json the node of every stage each batch ran, its
rows, and the stage records (etag, finish time) before the removal and at the end.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

SCENES = {"both": 2, "loss": 3}


def main(root: Path, out: Path) -> None:
    import ray
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "object_store_memory": 150 * 1024**2}
    cluster = Cluster(initialize_head=True, head_node_args=node | {"num_cpus": 0, "include_dashboard": False})
    try:
        workers = [cluster.add_node(**node) for _ in range(2)]
        cluster.wait_for_nodes()
        run(cluster, workers, root, out)
    finally:
        ray.shutdown()
        cluster.shutdown()


def run(cluster, workers: list, root: Path, out: Path) -> None:
    """The two batches on ``cluster``; the report goes to ``out``."""
    os.environ |= {"WORLDSTEREO_RAY__ADDRESS": cluster.address, "WORLDSTEREO_RAY__STAGE_CPUS": "0.5",
                   "WORLDSTEREO_RAY__STAGE_TIMEOUT_S": "300", "WORLDSTEREO_STORAGE__BACKEND": "local",
                   "WORLDSTEREO_STORAGE__ROOT": str(root / "store")}
    import tasks.remote_stage
    import tasks.stages
    from flows.scene_batch import run_scene_batch
    from test_flow import small_scenes
    from worldstereo.catalog.manifests import StageRecords
    from worldstereo.config import load_settings
    from worldstereo.storage import open_store

    ran: list[tuple[str, str, str]] = []
    submit = tasks.remote_stage.run_on_cluster

    def recorded(settings, scene_id, input_key, stage, names):  # what the flow learns, kept for the report
        outcome = submit(settings, scene_id, input_key, stage, names)
        ran.append((scene_id, outcome.stage, outcome.node_id))
        return outcome

    tasks.remote_stage.run_on_cluster = tasks.stages.run_on_cluster = recorded
    def phase(name: str) -> tuple[list[str], StageRecords]:
        """Buckets of the phase's own, and its scenes in the input bucket."""
        os.environ |= {"WORLDSTEREO_STORAGE__INPUT_BUCKET": f"input-{name}", "WORLDSTEREO_STORAGE__WORK_BUCKET": f"work-{name}"}
        settings = load_settings()
        del ran[:]
        return small_scenes(settings, root / name, SCENES[name]), StageRecords(open_store(settings.storage), f"work-{name}")

    def batch() -> list[dict]:
        return run_scene_batch(generator="oracle", trajectory={"num_frames": 3, "order": ["orbit"]},
                               overrides={"resolution_scale": 0.25, "splat": {"enabled": False}})  # a recorded no-op

    report: dict = {"workers": [w.node_id for w in workers]}
    phase("both")
    report["both"] = {"rows": batch(), "ran": list(ran)}

    scene_ids, records = phase("loss")
    store = open_store(load_settings().storage)

    def versions() -> dict[str, list]:
        return {r.key: [store.stat("work-loss", r.key).etag, r.finished_at.isoformat()]
                for s in scene_ids for r in records.records(s)}

    removed: dict = {}

    def remove_a_node() -> None:
        while not any(records.records(s) for s in scene_ids):
            time.sleep(0.05)
        removed["before"] = versions()
        cluster.remove_node(workers[1])  # its stage task and its actors die with it
        removed["node"] = workers[1].node_id

    remover = threading.Thread(target=remove_a_node)
    remover.start()
    rows = batch()
    remover.join()
    report["loss"] = {"rows": rows, "ran": list(ran), "scenes": scene_ids, "after": versions()} | removed
    out.write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
