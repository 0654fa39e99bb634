"""The bucket-notification receiver, and the deployments of prefect.yaml it starts.

Payloads are what MinIO posts (S3 event records in MinIO's envelope, keys URL-encoded as query values).
The end-to-end cases deploy prefect.yaml with ``prefect deploy`` against a Prefect API without a worker,
so the runs the receiver starts stay scheduled and can be counted.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote_plus

import pytest
import yaml
from fastapi.testclient import TestClient
from pydantic import SecretStr

from flows.webhook import NewObject, create_app
from worldstereo.config import WebhookSettings, load_settings

ROOT = Path(__file__).resolve().parents[1]
INPUTS = "ws-input"
POOL = "worldstereo-process"


def filer_event(path: str, event_type: str = "create", etag: str = "aed563ecafb4bcc5654c597a421547b2",
                directory: bool = False) -> dict:
    """One SeaweedFS filer notification for the entry at ``path`` (as a filer's webhook posts it)."""
    parent, _, name = path.rpartition("/")
    attributes = {"file_size": 100, "mtime": 1796558514, "file_mode": 432, "md5": "rtVj7K+0vMVlTFl6QhVHsg=="}
    entry = {"name": name, "attributes": attributes, "is_directory": directory,
             "chunks": [] if directory else [{"size": 100, "fid": {"volume_id": 1, "file_key": 1}}],
             "extended": {} if directory else {"Seaweed-X-Amz-ETag": base64.b64encode(etag.encode()).decode(),
                                               "Seaweed-X-Amz-Owner": "d29ybGRzdGVyZW8="}}
    return {"event_type": event_type, "key": path,
            "message": {"new_entry": entry, "delete_chunks": True, "new_parent_path": parent, "signatures": [-1]}}


def minio_event(key: str, bucket: str = INPUTS, etag: str = "5d41402abc4b2a76b9719d911017c592",
                event: str = "s3:ObjectCreated:Put") -> dict:
    """One MinIO notification for one object."""
    record = {
        "eventVersion": "2.0", "eventSource": "minio:s3", "awsRegion": "", "eventTime": "2026-01-05T10:00:00.000Z",
        "eventName": event, "userIdentity": {"principalId": "minioadmin"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"}, "responseElements": {"x-amz-request-id": "17B"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "Config",
               "bucket": {"name": bucket, "ownerIdentity": {"principalId": "minioadmin"},
                          "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": quote_plus(key), "size": 2048, "eTag": etag, "contentType": "image/png",
                          "userMetadata": {"content-type": "image/png"}, "sequencer": "17B9A8C0D1E2F3A4"}},
        "source": {"host": "127.0.0.1", "port": "", "userAgent": "MinIO (linux; amd64) minio-go/v7.0.70"},
    }
    return {"EventName": event, "Key": f"{bucket}/{key}", "Records": [record]}


class Recorder:
    """A starter that records what it was asked to start."""

    def __init__(self) -> None:
        self.started: list[NewObject] = []

    async def __call__(self, obj: NewObject) -> str:
        self.started.append(obj)
        return f"run-{len(self.started)}"


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def client_for(start, token: str | None = None) -> TestClient:
    settings = WebhookSettings(token=None if token is None else SecretStr(token))
    return TestClient(create_app(INPUTS, settings, start))


# --- receiving ------------------------------------------------------------------------------------
def test_new_input_image_starts_one_run(recorder: Recorder) -> None:
    response = client_for(recorder).post("/events", json=minio_event("uploads/living room.png", etag='"abc"'))
    assert response.status_code == 200
    assert recorder.started == [NewObject(INPUTS, "uploads/living room.png", "abc", 2048)]
    assert response.json() == {"started": [{"bucket": INPUTS, "key": "uploads/living room.png", "etag": "abc",
                                            "flow_run_id": "run-1"}], "ignored": 0}
    assert recorder.started[0].idempotency_key == f"{INPUTS}/uploads/living room.png/abc"


@pytest.mark.parametrize("payload", [
    minio_event("uploads/room.depth.npy"),
    minio_event("uploads/room.camera.json"),
    minio_event("uploads/notes.txt"),
    minio_event("uploads/.room.png"),
    minio_event("uploads/room.png", bucket="someone-else"),
    minio_event("uploads/room.png", event="s3:ObjectRemoved:Delete"),
    minio_event("uploads/room.png", event="s3:ObjectAccessed:Get"),
    {"EventName": "s3:TestEvent"},
], ids=["depth-sidecar", "camera-sidecar", "text", "hidden", "other-bucket", "removed", "accessed", "no-records"])
def test_other_events_start_nothing(recorder: Recorder, payload: dict) -> None:
    response = client_for(recorder).post("/events", json=payload)
    assert response.status_code == 200 and response.json()["started"] == []
    assert recorder.started == []


def test_one_post_with_many_records(recorder: Recorder) -> None:
    records = [minio_event(key)["Records"][0] for key in ("a/x.png", "a/x.depth.npy", "a/y.JPG", "a/x.png")]
    aws = minio_event("a/z.webp", event="ObjectCreated:CompleteMultipartUpload")["Records"][0]
    response = client_for(recorder).post("/events", json={"Records": [*records, aws]})
    assert [o.key for o in recorder.started] == ["a/x.png", "a/y.JPG", "a/z.webp"]
    assert response.json()["ignored"] == 2


def test_bearer_token(recorder: Recorder) -> None:
    client = client_for(recorder, token="s3cret")
    event = minio_event("uploads/room.png")
    for authorization in (None, "Bearer wrong", "Bearer s3cret2", "s3cret", "Basic s3cret", "Bearer  s3cret"):
        headers = {} if authorization is None else {"Authorization": authorization}
        assert client.post("/events", json=event, headers=headers).status_code == 401
    assert recorder.started == []
    for authorization in ("Bearer s3cret", "bearer s3cret"):  # the scheme is case-insensitive (RFC 9110)
        assert client.post("/events", json=event, headers={"Authorization": authorization}).status_code == 200
    assert len(recorder.started) == 2
    assert client.get("/healthz").json()["status"] == "ok"


def test_malformed_payload_is_rejected(recorder: Recorder) -> None:
    response = client_for(recorder).post("/events", json={"Records": [{"eventName": "s3:ObjectCreated:Put"}]})
    assert response.status_code == 422 and recorder.started == []


def test_filer_events_of_new_images_start_runs(recorder: Recorder) -> None:
    client = client_for(recorder)
    for payload in (filer_event(f"/buckets/{INPUTS}/drops/a b.png"),
                    filer_event(f"/buckets/{INPUTS}/drops/a b.png", "update", etag="46234a6d-2"),
                    filer_event(f"/buckets/{INPUTS}/top.JPG")):
        assert client.post("/events", json=payload).json()["ignored"] == 0
    assert recorder.started == [NewObject(INPUTS, "drops/a b.png", "aed563ecafb4bcc5654c597a421547b2", 100),
                                NewObject(INPUTS, "drops/a b.png", "46234a6d-2", 100),
                                NewObject(INPUTS, "top.JPG", "aed563ecafb4bcc5654c597a421547b2", 100)]


@pytest.mark.parametrize("payload", [
    filer_event(f"/buckets/{INPUTS}/drops/room.depth.npy"),
    filer_event(f"/buckets/{INPUTS}/drops", directory=True),
    filer_event(f"/buckets/{INPUTS}/folder.png", directory=True),
    filer_event(f"/buckets/{INPUTS}/.uploads/e4f8/0001_fdd9.part"),
    filer_event(f"/buckets/{INPUTS}/drops/room.png", "delete"),
    filer_event("/buckets/someone-else/room.png"),
    filer_event(f"/elsewhere/{INPUTS}/room.png"),
    {"event_type": "create", "key": "/buckets/x", "message": {"old_entry": {"name": "x"}}},
], ids=["sidecar", "folder", "folder-named-like-an-image", "multipart-part", "delete", "other-bucket",
        "outside-buckets", "no-new-entry"])
def test_other_filer_events_start_nothing(recorder: Recorder, payload: dict) -> None:
    response = client_for(recorder).post("/events", json=payload)
    assert response.status_code == 200 and response.json() == {"started": [], "ignored": 1}
    assert recorder.started == []


def test_malformed_filer_event_is_rejected(recorder: Recorder) -> None:
    response = client_for(recorder).post("/events", json={"event_type": "create", "message": {"new_entry": {}}})
    assert response.status_code == 422 and recorder.started == []


def test_receiver_settings_from_environment(monkeypatch) -> None:
    monkeypatch.setenv("WORLDSTEREO_WEBHOOK__TOKEN", "from-env")
    monkeypatch.setenv("WORLDSTEREO_WEBHOOK__PARAMETERS", '{"trajectory": {"num_frames": 5}, "limit": 1}')
    webhook = load_settings().webhook
    assert webhook.token.get_secret_value() == "from-env"
    assert webhook.parameters == {"trajectory": {"num_frames": 5}, "limit": 1}


# --- prefect.yaml and real deployments ------------------------------------------------------------
def test_prefect_yaml_declares_both_deployments() -> None:
    from prefect.cli.deploy._models import PrefectYamlModel
    from prefect.flows import load_flow_from_entrypoint

    config = PrefectYamlModel.model_validate(yaml.safe_load((ROOT / "prefect.yaml").read_text()))
    by_name = {d.name: d for d in config.deployments}
    assert set(by_name) == {"scene-batch", "rerun-failed"}
    for deployment in by_name.values():
        assert deployment.work_pool.name == POOL
        flow = load_flow_from_entrypoint(str(ROOT / deployment.entrypoint))
        assert flow.name == "scene-batch"
        flow.validate_parameters(deployment.parameters)
    assert by_name["rerun-failed"].parameters == {"rerun_failed": True}
    assert config.pull == [{"prefect.deployments.steps.set_working_directory":
                            {"directory": "{{ $WORLDSTEREO_PROJECT_DIR }}"}}]


@pytest.fixture(scope="module")
def deployments(prefect_api: str) -> dict[str, object]:
    """prefect.yaml deployed with the Prefect CLI into its work pool (which has no worker)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=POOL, type="process"), overwrite=True)
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "WORLDSTEREO_PROJECT_DIR": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    with get_client(sync_client=True) as client:
        return {name: client.read_deployment_by_name(f"scene-batch/{name}") for name in ("scene-batch", "rerun-failed")}


def test_deployments_as_registered(deployments: dict) -> None:
    batch, rerun = deployments["scene-batch"], deployments["rerun-failed"]
    assert batch.entrypoint == rerun.entrypoint == "flows/scene_batch.py:scene_batch"
    assert batch.work_pool_name == rerun.work_pool_name == POOL
    assert batch.parameters == {"input_prefix": "", "rerun_failed": False}
    assert rerun.parameters == {"rerun_failed": True}
    assert [(s.schedule.interval.total_seconds(), s.active) for s in batch.schedules] == [(300.0, False)]
    assert rerun.schedules == []
    for deployment in (batch, rerun):  # runs may overlap: the catalog's claims keep each scene to one batch
        assert deployment.global_concurrency_limit is None
    for deployment in (batch, rerun):  # the placeholder resolves from the deploying environment
        assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]


@pytest.fixture
def flow_runs(deployments: dict, prefect_api: str, monkeypatch) -> Iterator:
    """Reads back the flow runs of the scene-batch deployment (the receiver runs in its own thread, so
    it finds the API through the environment)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    only = DeploymentFilter(id=DeploymentFilterId(any_=[deployments["scene-batch"].id]))
    with get_client(sync_client=True) as client:
        yield lambda: client.read_flow_runs(deployment_filter=only)


def test_notifications_start_deployment_runs(flow_runs) -> None:
    from flows.webhook import deployment_starter

    client = TestClient(create_app(INPUTS, WebhookSettings(), deployment_starter()))
    assert flow_runs() == []

    first = client.post("/events", json=minio_event("drop/room one.png", etag="e1"))
    assert first.status_code == 200, first.text
    runs = flow_runs()
    assert [(str(r.id), r.parameters, r.state.type.value) for r in runs] == [
        (first.json()["started"][0]["flow_run_id"],
         {"input_prefix": "drop/room one.png", "rerun_failed": False}, "SCHEDULED")]

    again = client.post("/events", json=minio_event("drop/room one.png", etag="e1"))
    assert again.json()["started"][0]["flow_run_id"] == str(runs[0].id)
    for ignored in ("drop/room one.depth.npy", "drop/room one.camera.json"):
        client.post("/events", json=minio_event(ignored))
    client.post("/events", json=minio_event("drop/room.png", bucket="another-bucket"))
    assert len(flow_runs()) == 1

    client.post("/events", json=minio_event("drop/room one.png", etag="e2"))  # new content, same key
    client.post("/events", json=minio_event("drop/pano.jpg", etag="e3"))
    runs = flow_runs()
    assert sorted((r.parameters["input_prefix"], r.idempotency_key) for r in runs) == [
        ("drop/pano.jpg", f"{INPUTS}/drop/pano.jpg/e3"),
        ("drop/room one.png", f"{INPUTS}/drop/room one.png/e1"),
        ("drop/room one.png", f"{INPUTS}/drop/room one.png/e2"),
    ]

    quick = {"trajectory": {"num_frames": 5}, "overrides": {"resolution_scale": 0.25}, "input_prefix": "ignored/"}
    client = TestClient(create_app(INPUTS, WebhookSettings(parameters=quick), deployment_starter(parameters=quick)))
    started = client.post("/events", json=filer_event(f"/buckets/{INPUTS}/drop/quick.png")).json()["started"]
    (run,) = [r for r in flow_runs() if str(r.id) == started[0]["flow_run_id"]]
    assert run.parameters == {"input_prefix": "drop/quick.png", "rerun_failed": False,
                              "trajectory": {"num_frames": 5}, "overrides": {"resolution_scale": 0.25}}
