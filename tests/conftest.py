"""Shared fixtures. Storage: an S3 server (moto) on loopback, settings for both backends, a store of each."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from worldstereo.config import StorageSettings
from worldstereo.storage import ObjectStore, open_store

# every pipeline test runs the splat stage; a few steps prove it runs (tests/test_splat.py trains for real)
os.environ.setdefault("WORLDSTEREO_SPLAT__ITERATIONS", "10")

S3_ACCESS_KEY = "test-access-key-4f1c"
S3_SECRET_KEY = "test-secret-key-9b2e7d"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """``host:port`` of a moto S3 server for the whole session; it accepts any credentials."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
        env.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        port = _free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            yield f"127.0.0.1:{port}"
        finally:
            server.stop()


@pytest.fixture
def s3_settings(s3_endpoint: str) -> StorageSettings:
    """S3 settings with buckets of their own, so tests sharing the server never see each other's objects."""
    suffix = uuid.uuid4().hex[:12]
    return StorageSettings(
        backend="s3",
        endpoint=s3_endpoint,
        secure=False,
        access_key=SecretStr(S3_ACCESS_KEY),
        secret_key=SecretStr(S3_SECRET_KEY),
        input_bucket=f"ws-input-{suffix}",
        work_bucket=f"ws-work-{suffix}",
        multipart_part_size=5 * 1024 * 1024,
    )


@pytest.fixture
def local_settings(tmp_path: Path) -> StorageSettings:
    """A local store in this test's temporary directory."""
    return StorageSettings(backend="local", root=tmp_path / "store", multipart_part_size=5 * 1024 * 1024)


@pytest.fixture(params=["local", "s3"])
def storage_settings(request: pytest.FixtureRequest) -> StorageSettings:
    """Each backend in turn."""
    return request.getfixturevalue(f"{request.param}_settings")


@pytest.fixture
def store(storage_settings: StorageSettings) -> ObjectStore:
    """The store for ``storage_settings``."""
    return open_store(storage_settings)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """URL of a Prefect API on a temporary database for the whole session (starting it takes tens of seconds)."""
    import os

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry from a test server
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from intra-op threads, which only add synchronisation on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
