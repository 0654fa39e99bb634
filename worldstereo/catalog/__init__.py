"""Work-bucket bookkeeping: the scene catalog, stage records, per-scene claims and the input scan."""

from worldstereo.catalog.manifests import (
    Catalog,
    InputObject,
    Registration,
    SceneEntry,
    StageRecord,
    StageRecords,
    content_hash,
)
from worldstereo.catalog.schemas import CATALOG_SCHEMA, STAGE_RECORD_SCHEMA, InputKind, SceneStatus

__all__ = [
    "CATALOG_SCHEMA",
    "STAGE_RECORD_SCHEMA",
    "Catalog",
    "InputKind",
    "InputObject",
    "Registration",
    "SceneEntry",
    "SceneStatus",
    "StageRecord",
    "StageRecords",
    "content_hash",
]
