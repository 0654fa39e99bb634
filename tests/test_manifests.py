"""The scene catalog and stage records, on both backends."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from worldstereo.errors import PermanentError
from worldstereo.storage import (
    CATALOG_SCHEMA,
    STAGE_RECORD_SCHEMA,
    Catalog,
    InputKind,
    InputObject,
    ObjectStore,
    SceneStatus,
    StageRecord,
    StageRecords,
)
from worldstereo.storage.keys import catalog_key, output_key, scene_id_from_key

T0 = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)


class Ticks:
    """A clock that advances one second per reading."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def catalog(store: ObjectStore, storage_settings) -> Catalog:
    return Catalog(store, storage_settings.work_bucket, clock=Ticks())


def test_empty_catalog(catalog: Catalog):
    assert catalog.table().schema.equals(CATALOG_SCHEMA)
    assert catalog.table().num_rows == 0
    assert catalog.entries() == []
    assert catalog.by_status(SceneStatus.PENDING) == []
    with pytest.raises(KeyError, match="not in the catalog"):
        catalog.get("nope-0000000000")


def test_register_deduplicates_by_content_and_key(catalog: Catalog, store: ObjectStore, storage_settings):
    first = catalog.register(
        [
            InputObject.from_bytes("in/b.png", InputKind.PERSPECTIVE, b"room pixels"),
            InputObject.from_bytes("in/a.png", InputKind.PERSPECTIVE, b"room pixels"),
            InputObject.from_bytes("in/pano.jpg", InputKind.PANORAMA, b"panorama pixels"),
        ]
    )
    assert [e.input_key for e in first] == ["in/a.png", "in/pano.jpg"]
    assert {e.scene_id for e in first} == {scene_id_from_key("in/a.png"), scene_id_from_key("in/pano.jpg")}
    for entry in first:
        assert entry.status is SceneStatus.PENDING and entry.attempts == 0 and entry.error is None
        assert entry.created_at == entry.updated_at == T0 + timedelta(seconds=1)
    assert catalog.get(scene_id_from_key("in/pano.jpg")).input_kind is InputKind.PANORAMA

    second = catalog.register(
        [
            InputObject.from_bytes("in/a.png", InputKind.PERSPECTIVE, b"edited pixels"),
            InputObject.from_bytes("in/copy.png", InputKind.PERSPECTIVE, b"panorama pixels"),
            InputObject.from_bytes("in/new.png", InputKind.PERSPECTIVE, b"new pixels"),
        ]
    )
    assert [e.input_key for e in second] == ["in/new.png"]
    assert catalog.register([]) == []
    entries = catalog.entries()
    assert [e.input_key for e in entries] == sorted(
        ["in/a.png", "in/pano.jpg", "in/new.png"], key=scene_id_from_key
    )
    assert len({e.content_hash for e in entries}) == 3

    stored = store.read_table(storage_settings.work_bucket, catalog_key())
    assert stored.schema.equals(CATALOG_SCHEMA) and stored.num_rows == 3
    assert Catalog(store, storage_settings.work_bucket).entries() == entries


def test_status_transitions_and_attempts(catalog: Catalog):
    (entry,) = catalog.register([InputObject.from_bytes("in/room.png", InputKind.PERSPECTIVE, b"x")])
    scene = entry.scene_id

    running = catalog.set_status(scene, SceneStatus.RUNNING)
    assert (running.status, running.attempts, running.error) == (SceneStatus.RUNNING, 1, None)
    assert running.updated_at > entry.updated_at and running.created_at == entry.created_at

    failed = catalog.set_status(scene, SceneStatus.FAILED, error="depth backend crashed")
    assert (failed.status, failed.attempts, failed.error) == (SceneStatus.FAILED, 1, "depth backend crashed")
    assert catalog.by_status(SceneStatus.FAILED) == [failed]
    assert catalog.by_status(SceneStatus.PENDING, SceneStatus.RUNNING) == []

    retry = catalog.set_status(scene, SceneStatus.RUNNING)
    assert (retry.attempts, retry.error) == (2, None)
    done = catalog.set_status(scene, SceneStatus.DONE)
    assert (done.status, done.attempts, done.error) == (SceneStatus.DONE, 2, None)
    assert catalog.get(scene) == done
    assert catalog.by_status(SceneStatus.DONE) == [done]

    with pytest.raises(ValueError, match="cannot go from done to running"):
        catalog.set_status(scene, SceneStatus.RUNNING)
    again = catalog.set_status(scene, SceneStatus.PENDING)
    with pytest.raises(ValueError, match="cannot go from pending to done"):
        catalog.set_status(scene, SceneStatus.DONE)
    catalog.set_status(scene, SceneStatus.RUNNING)
    with pytest.raises(ValueError, match="needs an error message"):
        catalog.set_status(scene, SceneStatus.FAILED)
    assert catalog.get(scene).attempts == 3 and again.attempts == 2
    with pytest.raises(KeyError):
        catalog.set_status("unknown-0000000000", SceneStatus.RUNNING)


def test_upsert_replaces_rows_by_scene_id(catalog: Catalog):
    entries = catalog.register(
        [InputObject.from_bytes(f"in/{name}.png", InputKind.PERSPECTIVE, name.encode()) for name in ("p", "q")]
    )
    changed = replace(entries[0], attempts=7)
    catalog.upsert([changed])
    assert catalog.table().num_rows == 2
    assert catalog.get(changed.scene_id).attempts == 7
    assert catalog.get(entries[1].scene_id) == entries[1]


def test_catalog_with_a_foreign_schema_is_refused(catalog: Catalog, store: ObjectStore, storage_settings):
    store.write_table(storage_settings.work_bucket, catalog_key(), pa.table({"scene_id": ["a"]}))
    with pytest.raises(PermanentError, match="manifest schema"):
        catalog.entries()


def test_stage_record_written_twice_is_one_row(store: ObjectStore, storage_settings):
    records = StageRecords(store, storage_settings.work_bucket)
    scene = scene_id_from_key("in/room.png")
    finished = datetime(2025, 3, 1, 10, 0, 0, 250000, tzinfo=UTC)
    record = StageRecord(
        scene_id=scene,
        stage="generate",
        trajectory="orbit",
        output_keys=(output_key(scene, "orbit", "video.mp4"), output_key(scene, "orbit", "cameras.json")),
        metrics={"psnr": 31.25, "frames": 81.0},
        duration_s=12.5,
        finished_at=finished,
    )
    key = records.write(record)
    assert key == f"scenes/{scene}/records/generate-orbit.parquet"
    records.write(record)
    table = records.table(scene)
    assert table.schema.equals(STAGE_RECORD_SCHEMA) and table.num_rows == 1

    back = records.read(scene, "generate", "orbit")
    assert back == record
    assert dict(back.metrics) == {"psnr": 31.25, "frames": 81.0}
    assert back.finished_at == finished

    scene_wide = StageRecord(scene_id=scene, stage="fuse", output_keys=(), duration_s=0.0)
    records.write(scene_wide)
    records.write(StageRecord(scene_id=scene, stage="generate", trajectory="up", output_keys=(), duration_s=1.0))
    table = records.table(scene)
    assert table.num_rows == 3
    assert list(zip(table["stage"].to_pylist(), table["trajectory"].to_pylist())) == [
        ("fuse", None),
        ("generate", "orbit"),
        ("generate", "up"),
    ]
    assert records.read(scene, "fuse") == scene_wide
    assert records.read(scene, "reconstruct") is None
    assert records.table(scene_id_from_key("in/other.png")).num_rows == 0


def test_is_done_needs_the_record_and_every_output(store: ObjectStore, storage_settings):
    bucket = storage_settings.work_bucket
    records = StageRecords(store, bucket)
    scene = scene_id_from_key("in/room.png")
    outputs = (output_key(scene, "up", "video.mp4"), output_key(scene, "up", "depth.npy"))
    assert not records.is_done(scene, "generate", "up")

    store.put_bytes(bucket, outputs[0], b"video")
    records.write(StageRecord(scene_id=scene, stage="generate", trajectory="up", output_keys=outputs, duration_s=3.0))
    assert not records.is_done(scene, "generate", "up")

    store.put_bytes(bucket, outputs[1], b"depth")
    assert records.is_done(scene, "generate", "up")
    assert not records.is_done(scene, "generate", "left")

    store.delete(bucket, outputs[0])
    assert not records.is_done(scene, "generate", "up")


def test_stage_records_validate_their_fields():
    scene = scene_id_from_key("in/room.png")
    with pytest.raises(ValueError, match="stage"):
        StageRecord(scene_id=scene, stage="Bad Stage", output_keys=(), duration_s=1.0)
    with pytest.raises(ValueError, match="relative segment"):
        StageRecord(scene_id=scene, stage="fuse", output_keys=("../x",), duration_s=1.0)
    with pytest.raises(ValueError, match="duration_s"):
        StageRecord(scene_id=scene, stage="fuse", output_keys=(), duration_s=-1.0)
    with pytest.raises(ValueError, match="timezone"):
        StageRecord(scene_id=scene, stage="fuse", output_keys=(), duration_s=1.0, finished_at=datetime(2025, 1, 1))
