"""Bucket-notification receiver: a new image in the input bucket starts a ``scene-batch`` deployment run.

S3 and MinIO post event JSON (``{"Records": [{"eventName", "s3": {"bucket": {"name"}, "object": {"key",
"eTag"}}}]}``; object keys are URL-encoded). Every ``ObjectCreated`` record of an input image in the input
bucket starts one run with ``input_prefix`` set to the object's key. The run's idempotency key is
``bucket/key/etag``, so a notification delivered twice starts one run, and new content under the same key
starts another. Sidecars, other objects and other buckets are ignored.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import unquote_plus

from fastapi import Depends, FastAPI, Header, HTTPException, status
from pydantic import BaseModel, ConfigDict, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from worldstereo.inputs import is_input_image

DEPLOYMENT = "scene-batch/scene-batch"
CREATED_EVENTS = ("s3:ObjectCreated:", "ObjectCreated:")  # MinIO and AWS spellings


class WebhookSettings(BaseSettings):
    """``WORLDSTEREO_WEBHOOK_TOKEN`` (bearer token; none accepts every request), ``..._DEPLOYMENT``."""

    model_config = SettingsConfigDict(env_prefix="WORLDSTEREO_WEBHOOK_", extra="ignore")

    token: SecretStr | None = None
    deployment: str = DEPLOYMENT


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


# --- starting runs -------------------------------------------------------------------------------
Starter = Callable[[NewObject], Awaitable[str]]


def deployment_starter(deployment: str = DEPLOYMENT) -> Starter:
    """Start ``deployment`` for one new input without waiting for it; returns the flow run id."""
    from prefect.deployments import arun_deployment

    async def start(obj: NewObject) -> str:
        run = await arun_deployment(deployment, parameters={"input_prefix": obj.key}, timeout=0,
                                    idempotency_key=obj.idempotency_key, as_subflow=False,
                                    tags=["webhook"])
        return str(run.id)

    return start


# --- the app -------------------------------------------------------------------------------------
def create_app(input_bucket: str | None = None, settings: WebhookSettings | None = None,
               start: Starter | None = None) -> FastAPI:
    """The receiver: ``POST /events`` (bearer token when configured) and ``GET /healthz``."""
    settings = settings or WebhookSettings()
    if input_bucket is None:
        from worldstereo.config import load_settings

        input_bucket = load_settings().storage.input_bucket
    start = start or deployment_starter(settings.deployment)
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
    async def events(notification: Notification) -> dict:
        objects = new_inputs(notification, input_bucket)
        started = [{"bucket": o.bucket, "key": o.key, "etag": o.etag, "flow_run_id": await start(o)}
                   for o in objects]
        return {"started": started, "ignored": len(notification.Records) - len(objects)}

    return app
