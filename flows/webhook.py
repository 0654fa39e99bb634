"""Bucket-notification receiver: a new image in the input bucket starts a ``scene-batch`` deployment run.

Two payloads are understood. S3 and MinIO post event records (``{"Records": [{"eventName", "s3": {"bucket":
{"name"}, "object": {"key", "eTag"}}}]}``; object keys are URL-encoded). A SeaweedFS filer's webhook
notification posts one filer event per change (``{"event_type": "create", "message": {"new_entry": {...},
"new_parent_path": "/buckets/BUCKET/..."}}``; the S3 ETag, base64-encoded, in the entry's
``Seaweed-X-Amz-ETag``). Every created (or rewritten) input image in the input bucket starts one run with
``input_prefix`` set to its key and the parameters of ``webhook.parameters``. The run's idempotency key is
``bucket/key/etag``, so a notification delivered twice starts one run, and new content under the same key
starts another. Sidecars, folders, multipart parts, other objects and other buckets are ignored.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from fastapi import Body, Depends, FastAPI, Header, HTTPException, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, ValidationError

from worldstereo.config import WebhookSettings
from worldstereo.inputs import is_input_image

CREATED_EVENTS = ("s3:ObjectCreated:", "ObjectCreated:")  # MinIO and AWS spellings
FILER_WRITES = ("create", "update")  # filer event types that leave new content at new_parent_path/name
FILER_BUCKETS = "/buckets/"  # where a SeaweedFS filer keeps its S3 buckets (its -dir.buckets default)


# --- notification payload ------------------------------------------------------------------------
class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Bucket(_Loose):
    name: str


class _Object(_Loose):
    key: str
    eTag: str = ""
    size: int = 0


class _S3(_Loose):
    bucket: _Bucket
    object: _Object


class _Record(_Loose):
    eventName: str
    s3: _S3


class Notification(_Loose):
    """A bucket notification: MinIO's envelope (``EventName``, ``Key``) around S3 event records."""

    EventName: str | None = None
    Key: str | None = None
    Records: list[_Record] = []


class _Entry(_Loose):
    name: str
    is_directory: bool = False
    attributes: dict[str, Any] = {}
    extended: dict[str, str] = {}


class _FilerMessage(_Loose):
    new_entry: _Entry | None = None
    new_parent_path: str = ""


class FilerEvent(_Loose):
    """A SeaweedFS filer notification: one change of one entry."""

    event_type: str
    key: str = ""
    message: _FilerMessage


@dataclass(frozen=True)
class NewObject:
    """An object that was created in a bucket."""

    bucket: str
    key: str
    etag: str
    size: int

    @property
    def idempotency_key(self) -> str:
        return f"{self.bucket}/{self.key}/{self.etag}"


def new_inputs(notification: Notification, input_bucket: str) -> list[NewObject]:
    """The created input images of ``input_bucket`` in a notification, without repeats."""
    found: dict[tuple[str, str], NewObject] = {}
    for record in notification.Records:
        obj = NewObject(record.s3.bucket.name, unquote_plus(record.s3.object.key),
                        record.s3.object.eTag.strip('"'), record.s3.object.size)
        if record.eventName.startswith(CREATED_EVENTS) and obj.bucket == input_bucket and is_input_image(obj.key):
            found.setdefault((obj.key, obj.etag), obj)
    return list(found.values())


def filer_inputs(event: FilerEvent, input_bucket: str) -> list[NewObject]:
    """The input image of ``input_bucket`` a filer event created or rewrote, if it is one."""
    entry, parent = event.message.new_entry, event.message.new_parent_path.rstrip("/")
    if event.event_type not in FILER_WRITES or entry is None or entry.is_directory:
        return []
    bucket, _, folder = f"{parent}/".removeprefix(FILER_BUCKETS).partition("/")
    key = f"{folder}{entry.name}"
    if not parent.startswith(FILER_BUCKETS.rstrip("/")) or bucket != input_bucket or not is_input_image(key):
        return []
    size = int(entry.attributes.get("file_size", 0))
    return [NewObject(bucket, key, _filer_etag(entry), size)]


def _filer_etag(entry: _Entry) -> str:
    """The object's S3 ETag (base64 in ``Seaweed-X-Amz-ETag``), else its MD5 or modification time."""
    try:
        return base64.b64decode(entry.extended["Seaweed-X-Amz-ETag"], validate=True).decode().strip('"')
    except (KeyError, binascii.Error, UnicodeDecodeError):
        pass
    md5 = entry.attributes.get("md5")
    return base64.b64decode(md5).hex() if md5 else f"mtime-{entry.attributes.get('mtime', 0)}"


def parse_payload(payload: dict[str, Any], input_bucket: str) -> tuple[list[NewObject], int]:
    """New input images of a payload of either kind, and how many records or events it ignored."""
    if "event_type" in payload:
        found = filer_inputs(FilerEvent.model_validate(payload), input_bucket)
        return found, 1 - len(found)
    notification = Notification.model_validate(payload)
    found = new_inputs(notification, input_bucket)
    return found, len(notification.Records) - len(found)


# --- starting runs -------------------------------------------------------------------------------
Starter = Callable[[NewObject], Awaitable[str]]


def deployment_starter(deployment: str = WebhookSettings().deployment,
                       parameters: dict[str, Any] | None = None) -> Starter:
    """Start ``deployment`` for one new input without waiting for it; returns the flow run id.

    The run's parameters are ``parameters`` with ``input_prefix`` set to the input's key.
    """
    from prefect.deployments import arun_deployment

    async def start(obj: NewObject) -> str:
        run = await arun_deployment(deployment, parameters={**(parameters or {}), "input_prefix": obj.key},
                                    timeout=0,
                                    idempotency_key=obj.idempotency_key, as_subflow=False,
                                    tags=["webhook"])
        return str(run.id)

    return start


# --- the app -------------------------------------------------------------------------------------
def create_app(input_bucket: str | None = None, settings: WebhookSettings | None = None,
               start: Starter | None = None) -> FastAPI:
    """The receiver: ``POST /events`` (bearer token when configured) and ``GET /healthz``.

    What is not given comes from the settings (``storage.input_bucket``, ``webhook``).
    """
    if input_bucket is None or settings is None:
        from worldstereo.config import load_settings

        loaded = load_settings()
        input_bucket = input_bucket or loaded.storage.input_bucket
        settings = settings or loaded.webhook
    start = start or deployment_starter(settings.deployment, settings.parameters)
    token = None if settings.token is None else settings.token.get_secret_value().encode()

    def authorize(authorization: str = Header(default="")) -> None:
        scheme, _, credentials = authorization.partition(" ")
        if token is not None and not (scheme.lower() == "bearer" and hmac.compare_digest(credentials.encode(), token)):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(title="worldstereo bucket notifications")

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "input_bucket": input_bucket, "deployment": settings.deployment}

    @app.post("/events", dependencies=[Depends(authorize)])
    async def events(payload: dict[str, Any] = Body()) -> dict:
        try:
            objects, ignored = parse_payload(payload, input_bucket)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from exc
        started = [{"bucket": o.bucket, "key": o.key, "etag": o.etag, "flow_run_id": await start(o)}
                   for o in objects]
        return {"started": started, "ignored": ignored}

    return app
