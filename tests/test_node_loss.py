"""Scene batches on a two-node Ray cluster (``ray.cluster_utils.Cluster``) that loses a node mid-batch.

The cluster and its batches run in a process of their own (``two_node_batch.py``): this process may hold the
session's local Ray of ``test_flow.py``, and a process joins one Ray cluster only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_nodes(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("two-nodes")
    out = root / "report.json"
    with tempfile.TemporaryDirectory(prefix="ray") as ray_tmp:  # short: Ray's socket paths live under it
        env = {k: v for k, v in os.environ.items() if not k.startswith("WORLDSTEREO_")} | {
            "PREFECT_API_URL": prefect_api, "RAY_TMPDIR": ray_tmp}
        subprocess.run([sys.executable, "two_node_batch.py", str(root), str(out)], cwd=Path(__file__).parent,
                       env=env, check=True, timeout=900)
    return json.loads(out.read_text())


def test_stages_run_on_both_nodes(two_nodes: dict) -> None:
    both = two_nodes["both"]
    assert [row["status"] for row in both["rows"]] == ["done"] * 2
    assert len(both["ran"]) == 2 * 4  # init, orbit, splat, export of each scene
    assert {node for _, _, node in both["ran"]} == set(two_nodes["workers"])


def test_a_lost_node_costs_only_its_work(two_nodes: dict) -> None:
    loss = two_nodes["loss"]
    assert loss["node"] == two_nodes["workers"][1] and loss["before"]  # removed after a stage had finished
    assert sorted((row["scene"], row["status"]) for row in loss["rows"]) == [(s, "done") for s in sorted(loss["scenes"])]
    assert len(loss["after"]) == 4 * len(loss["scenes"])  # every stage recorded, each once
    assert {key: loss["after"][key] for key in loss["before"]} == loss["before"]  # finished work was kept
    assert {(scene, stage) for scene, stage, _ in loss["ran"]} == {
        (scene, stage) for scene in loss["scenes"] for stage in ("init", "orbit", "splat", "export")}
    after_removal = [node for *_, node in loss["ran"]][-1]
    assert after_removal == two_nodes["workers"][0]  # the last stages ran on the node left
