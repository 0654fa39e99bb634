"""Two concurrent scene-batch runs over the same buckets, repeated (not collected by default; run it by name):

    PYTHONPATH=$PWD python -m pytest -q tests/stress_concurrent_batches.py
"""

from __future__ import annotations

from pathlib import Path

import pytest

from test_flow import batches_in_threads, ray_cluster, two_batches_at_once, use_buckets  # noqa: F401  (ray_cluster: a fixture)

ROUNDS = 20


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_two_batches_at_once(round_: int, prefect_api: str, ray_cluster: None, s3_endpoint: str,  # noqa: F811
                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    two_batches_at_once(use_buckets(monkeypatch, s3_endpoint), tmp_path, batches_in_threads)
