"""Object storage (a local directory or any S3-compatible server) and the Parquet manifests kept in it."""

from worldstereo.storage.base import ObjectEntry, ObjectInfo, ObjectNotFoundError, ObjectStore
from worldstereo.storage.factory import open_store
from worldstereo.storage.local import LocalStore
from worldstereo.storage.manifests import (
    Catalog,
    InputObject,
    Registration,
    SceneEntry,
    StageRecord,
    StageRecords,
    content_hash,
)
from worldstereo.storage.s3 import S3Store
from worldstereo.storage.schemas import CATALOG_SCHEMA, STAGE_RECORD_SCHEMA, InputKind, SceneStatus

__all__ = [
    "CATALOG_SCHEMA",
    "STAGE_RECORD_SCHEMA",
    "Catalog",
    "InputKind",
    "InputObject",
    "LocalStore",
    "ObjectEntry",
    "ObjectInfo",
    "ObjectNotFoundError",
    "ObjectStore",
    "Registration",
    "S3Store",
    "SceneEntry",
    "SceneStatus",
    "StageRecord",
    "StageRecords",
    "content_hash",
    "open_store",
]
