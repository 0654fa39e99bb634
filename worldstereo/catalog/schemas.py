"""Every Parquet manifest schema, and the value sets of their enumerated columns."""

from __future__ import annotations

from enum import StrEnum

import pyarrow as pa

from worldstereo.errors import PermanentError


class InputKind(StrEnum):
    """What an input image is."""

    PERSPECTIVE = "perspective"
    PANORAMA = "panorama"


class SceneStatus(StrEnum):
    """Where a scene is in the batch."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


TIMESTAMP = pa.timestamp("us", tz="UTC")

# One row per scene: the catalog the batch flow schedules from.
CATALOG_SCHEMA = pa.schema(
    [
        pa.field("scene_id", pa.string(), nullable=False),
        pa.field("input_key", pa.string(), nullable=False),
        pa.field("input_kind", pa.string(), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("input_version", pa.string(), nullable=True),  # the listing's version when last hashed
        pa.field("status", pa.string(), nullable=False),
        pa.field("attempts", pa.int32(), nullable=False),
        pa.field("error", pa.string(), nullable=True),
        pa.field("created_at", TIMESTAMP, nullable=False),
        pa.field("updated_at", TIMESTAMP, nullable=False),
    ]
)

# One row per finished (scene, stage, trajectory); trajectory is null for scene-wide stages.
STAGE_RECORD_SCHEMA = pa.schema(
    [
        pa.field("scene_id", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("trajectory", pa.string(), nullable=True),
        pa.field("output_keys", pa.list_(pa.string()), nullable=False),
        pa.field("metrics", pa.map_(pa.string(), pa.float64()), nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("finished_at", TIMESTAMP, nullable=False),
    ]
)


def conform(table: pa.Table, schema: pa.Schema, what: str) -> pa.Table:
    """``table`` with exactly ``schema``'s columns and types, or a ``PermanentError`` naming ``what``.

    A nullable column the table lacks (written before the column existed) is filled with nulls.
    """
    if table.schema.equals(schema):
        return table
    for field in schema:
        if field.nullable and field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(len(table), field.type))
    try:
        return table.select(schema.names).cast(schema)
    except (KeyError, pa.ArrowException) as exc:
        raise PermanentError(f"{what} does not match its manifest schema: {exc}") from exc
