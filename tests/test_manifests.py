"""The scene catalog and stage records, on both backends."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from worldstereo.catalog import (
    CATALOG_SCHEMA,
    STAGE_RECORD_SCHEMA,
    Catalog,
    InputKind,
    InputObject,
    Registration,
    SceneStatus,
    StageRecord,
    StageRecords,
)
from worldstereo.catalog.manifests import MANIFEST_ROW_GROUP
from worldstereo.config import StorageSettings
from worldstereo.errors import PermanentError
from worldstereo.storage import ObjectStore, open_store
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
    ).added
    assert [e.input_key for e in first] == ["in/a.png", "in/pano.jpg"]
    assert {e.scene_id for e in first} == {scene_id_from_key("in/a.png"), scene_id_from_key("in/pano.jpg")}
    for entry in first:
        assert entry.status is SceneStatus.PENDING and entry.attempts == 0 and entry.error is None
        assert entry.created_at == entry.updated_at == T0 + timedelta(seconds=1)
    assert catalog.get(scene_id_from_key("in/pano.jpg")).input_kind is InputKind.PANORAMA

    second = catalog.register(
        [
            InputObject.from_bytes("in/copy.png", InputKind.PERSPECTIVE, b"panorama pixels"),
            InputObject.from_bytes("in/new.png", InputKind.PERSPECTIVE, b"new pixels"),
        ]
    )
    assert [e.input_key for e in second.added] == ["in/new.png"] and second.replaced == []
    assert catalog.register([]) == Registration([], [])
    entries = catalog.entries()
    assert [e.input_key for e in entries] == sorted(
        ["in/a.png", "in/pano.jpg", "in/new.png"], key=scene_id_from_key
    )
    assert len({e.content_hash for e in entries}) == 3

    stored = store.read_table(storage_settings.work_bucket, catalog_key())
    assert stored.schema.equals(CATALOG_SCHEMA) and stored.num_rows == 3
    assert Catalog(store, storage_settings.work_bucket).entries() == entries


def test_status_transitions_and_attempts(catalog: Catalog):
    (entry,) = catalog.register([InputObject.from_bytes("in/room.png", InputKind.PERSPECTIVE, b"x")]).added
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


def test_replaced_input_goes_back_to_pending_with_its_new_hash(catalog: Catalog, store: ObjectStore, storage_settings):
    (entry,) = catalog.register([InputObject.from_bytes("in/a.png", InputKind.PERSPECTIVE, b"old", "v1")]).added
    catalog.set_status(entry.scene_id, SceneStatus.RUNNING)
    failed = catalog.set_status(entry.scene_id, SceneStatus.FAILED, error="not an image")
    seen_by_hook = []

    def on_replace(old):  # runs before the catalog changes: what is stored is still the old row
        seen_by_hook.append((old, Catalog(store, storage_settings.work_bucket).get(old.scene_id)))

    edited = InputObject.from_bytes("in/a.png", InputKind.PERSPECTIVE, b"edited", "v2")
    registration = catalog.register([edited], on_replace=on_replace)

    assert registration.added == [] and registration.scene_ids == [entry.scene_id]
    (replaced,) = registration.replaced
    assert seen_by_hook == [(failed, failed)]
    assert (replaced.status, replaced.error, replaced.attempts) == (SceneStatus.PENDING, None, 1)
    assert (replaced.content_hash, replaced.input_version) == (edited.content_hash, "v2")
    assert replaced.created_at == entry.created_at and replaced.updated_at > failed.updated_at
    assert catalog.get(entry.scene_id) == replaced
    assert catalog.register([edited], on_replace=on_replace) == Registration([], []) and len(seen_by_hook) == 1


def test_unchanged_content_under_a_new_version_only_records_the_version(catalog: Catalog, store, storage_settings):
    (entry,) = catalog.register([InputObject.from_bytes("in/a.png", InputKind.PERSPECTIVE, b"same", "v1")]).added
    done = catalog.set_status(catalog.set_status(entry.scene_id, SceneStatus.RUNNING).scene_id, SceneStatus.DONE)
    etag = store.stat(storage_settings.work_bucket, catalog_key()).etag

    assert catalog.register([InputObject.from_bytes("in/a.png", InputKind.PERSPECTIVE, b"same", "v1")]) == Registration([], [])
    assert store.stat(storage_settings.work_bucket, catalog_key()).etag == etag  # nothing to write
    assert catalog.register([InputObject.from_bytes("in/a.png", InputKind.PERSPECTIVE, b"same", "v2")]) == Registration([], [])
    assert catalog.get(entry.scene_id) == replace(done, input_version="v2")


def test_catalog_written_before_input_versions_reads_them_as_unknown(catalog: Catalog, store, storage_settings):
    (entry,) = catalog.register([InputObject.from_bytes("in/a.png", InputKind.PERSPECTIVE, b"x", "v1")]).added
    key = catalog_key()
    older = store.read_table(storage_settings.work_bucket, key).drop_columns(["input_version"])
    store.write_table(storage_settings.work_bucket, key, older)

    assert catalog.entries() == [replace(entry, input_version=None)]
    assert catalog.table().schema.equals(CATALOG_SCHEMA)


def test_status_changes_are_small_writes_folded_by_compaction(catalog: Catalog, store: ObjectStore, storage_settings):
    bucket = storage_settings.work_bucket
    entries = catalog.register(
        [InputObject.from_bytes(f"in/{name}.png", InputKind.PERSPECTIVE, name.encode()) for name in "pqr"]
    ).added
    manifest_etag = store.stat(bucket, catalog_key()).etag
    asked: list[tuple] = []
    for name in ("read_table", "get_bytes", "list", "exists"):
        real = getattr(store, name)
        setattr(store, name, lambda *args, _real=real, _name=name: asked.append((_name, *args[1:])) or _real(*args))

    running = catalog.advance(entries[0], SceneStatus.RUNNING)
    first = [e.key for e in store.list(bucket, "catalog/updates/")]
    asked.clear()
    done = catalog.advance(running, SceneStatus.DONE)
    failed = catalog.advance(catalog.advance(entries[1], SceneStatus.RUNNING), SceneStatus.FAILED, "no depth")

    # advancing from a known row reads nothing: it lists only its own scene's changes, to delete the superseded
    assert asked == [("list", f"catalog/updates/{entries[0].scene_id}/")] + [("list", f"catalog/updates/{entries[1].scene_id}/")] * 2
    assert store.stat(bucket, catalog_key()).etag == manifest_etag
    updates = [e.key for e in store.list(bucket, "catalog/updates/")]
    assert [k.split("/")[2] for k in updates] == [entries[0].scene_id, entries[1].scene_id]
    assert first[0] not in updates  # superseded by the done change
    assert catalog.entries() == [done, failed, entries[2]]
    assert catalog.by_status(SceneStatus.FAILED) == [failed]

    assert catalog.compact() == 2
    assert list(store.list(bucket, "catalog/updates/")) == []
    assert catalog.entries() == [done, failed, entries[2]]
    folded_etag = store.stat(bucket, catalog_key()).etag
    assert catalog.compact() == 0 and store.stat(bucket, catalog_key()).etag == folded_etag


def test_registration_folds_updates_and_a_stale_update_never_wins(catalog: Catalog, store: ObjectStore, storage_settings):
    bucket = storage_settings.work_bucket
    (entry,) = catalog.register([InputObject.from_bytes("in/a.png", InputKind.PERSPECTIVE, b"old", "v1")]).added
    failed = catalog.advance(catalog.advance(entry, SceneStatus.RUNNING), SceneStatus.FAILED, "not an image")
    stale_key = [e.key for e in store.list(bucket, f"catalog/updates/{entry.scene_id}/")][-1]
    stale = store.get_bytes(bucket, stale_key)

    (replaced,) = catalog.register([InputObject.from_bytes("in/a.png", InputKind.PERSPECTIVE, b"new", "v2")]).replaced
    assert list(store.list(bucket, "catalog/updates/")) == []  # folded into the manifest it wrote
    assert Catalog(store, bucket).table().num_rows == 1

    store.put_bytes(bucket, stale_key, stale)  # as if its delete was lost
    assert catalog.get(entry.scene_id) == replaced != failed
    assert catalog.compact() == 1 and catalog.get(entry.scene_id) == replaced


def test_an_update_written_during_compaction_is_not_lost(catalog: Catalog, store: ObjectStore, storage_settings):
    bucket = storage_settings.work_bucket
    entries = catalog.register(
        [InputObject.from_bytes(f"in/{name}.png", InputKind.PERSPECTIVE, name.encode()) for name in "ab"]
    ).added
    running = catalog.advance(entries[0], SceneStatus.RUNNING)
    real_list = store.list
    late: list[SceneEntry] = []

    def list_then_write(*args, **kwargs):  # another writer's change lands right after compaction listed the updates
        listed = list(real_list(*args, **kwargs))
        if not late:
            store.list = real_list  # the change lists its scene's updates to delete the one it supersedes
            late.append(catalog.advance(running, SceneStatus.DONE))
        return iter(listed)

    store.list = list_then_write
    assert catalog.compact() == 1
    store.list = real_list
    assert catalog.get(entries[0].scene_id) == late[0]
    assert catalog.compact() == 1 and catalog.get(entries[0].scene_id) == late[0]


def test_two_compactions_at_once_keep_every_change(catalog: Catalog, store: ObjectStore, storage_settings):
    bucket = storage_settings.work_bucket
    entries = catalog.register(
        [InputObject.from_bytes(f"in/{name}.png", InputKind.PERSPECTIVE, name.encode()) for name in "abcdef"]
    ).added
    other = Catalog(store, bucket)
    with ThreadPoolExecutor(4) as pool:
        changed = list(pool.map(lambda e: Catalog(store, bucket).advance(e, SceneStatus.RUNNING), entries))
        list(pool.map(lambda c: c.compact(), [catalog, other, catalog, other]))
    assert list(store.list(bucket, "catalog/updates/")) == []
    assert Catalog(store, bucket).entries() == changed


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


def test_catalog_command_lists_scenes_with_their_reasons(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from worldstereo.cli import app
    from worldstereo.config import StorageSettings
    from worldstereo.storage import open_store

    monkeypatch.setenv("WORLDSTEREO_STORAGE__ROOT", str(tmp_path / "store"))
    settings = StorageSettings(root=tmp_path / "store")
    catalog = Catalog(open_store(settings), settings.work_bucket, clock=Ticks())
    bad, _ = catalog.register(  # added in key order
        [InputObject.from_bytes(f"in/{name}.png", InputKind.PERSPECTIVE, name.encode()) for name in ("good", "bad")]
    ).added
    catalog.set_status(bad.scene_id, SceneStatus.RUNNING)
    catalog.set_status(bad.scene_id, SceneStatus.FAILED, error="InvalidInputError: not an image")

    listed = CliRunner().invoke(app, ["catalog"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[-1] == f"1 pending, 0 running, 0 done, 1 failed in {settings.work_bucket}"
    failed_line = next(line for line in lines if line.startswith(bad.scene_id))
    assert failed_line.split()[1:3] == ["failed", "1"] and failed_line.endswith("InvalidInputError: not an image")

    path = tmp_path / "failed.json"
    only_failed = CliRunner().invoke(app, ["catalog", "--status", "failed", "--json", str(path)])
    assert only_failed.exit_code == 0, only_failed.output
    result = json.loads(path.read_text())
    assert [(r["scene"], r["input"], r["error"]) for r in result["scenes"]] == [
        (bad.scene_id, "in/bad.png", "InvalidInputError: not an image")
    ]
    assert result["counts"] == {"failed": 1}
    refused = CliRunner().invoke(app, ["catalog", "--status", "broken"])
    assert refused.exit_code == 2 and "broken" in refused.output


def test_compaction_folds_in_bounded_passes_with_one_delete_each(catalog: Catalog, store: ObjectStore, storage_settings):
    bucket = storage_settings.work_bucket
    entries = catalog.register(
        [InputObject.from_bytes(f"in/{name}.png", InputKind.PERSPECTIVE, name.encode()) for name in "abcde"]
    ).added
    running = [catalog.advance(entry, SceneStatus.RUNNING) for entry in entries]
    deletes: list[int] = []
    real = store.delete_many
    store.delete_many = lambda b, keys: deletes.append(len(keys)) or real(b, keys)

    assert catalog.compact(per_pass=2) == 5

    assert deletes == [2, 2, 1]  # a manifest write and one multi-object delete per pass
    assert list(store.list(bucket, "catalog/updates/")) == []
    assert catalog.entries() == running


def test_a_status_change_written_by_an_earlier_version_is_still_read(catalog: Catalog, store: ObjectStore,
                                                                     storage_settings):
    bucket = storage_settings.work_bucket
    (entry,) = catalog.register([InputObject.from_bytes("in/a.png", InputKind.PERSPECTIVE, b"a")]).added
    running = replace(entry, status=SceneStatus.RUNNING, attempts=1, updated_at=entry.updated_at + timedelta(seconds=1))
    store.write_table(bucket, f"catalog/updates/{entry.scene_id}/00000000000000000001_0123456789ab.parquet",
                      pa.Table.from_pylist([asdict(running)], schema=CATALOG_SCHEMA))
    assert catalog.get(entry.scene_id) == running
    assert catalog.compact() == 1 and catalog.entries() == [running]


def test_one_scene_of_a_large_catalog_reads_one_row_group(tmp_path):
    store = open_store(StorageSettings(backend="local", root=tmp_path / "store"))
    catalog = Catalog(store, "work")
    count = 3 * MANIFEST_ROW_GROUP + 5
    entries = {e.scene_id: e for e in catalog.register(
        [InputObject.from_bytes(f"in/{i:05d}.png", InputKind.PERSPECTIVE, str(i).encode()) for i in range(count)]
    ).added}
    rows_read: list[int] = []
    real = store.read_table
    store.read_table = lambda *args, **kwargs: (table := real(*args, **kwargs), rows_read.append(table.num_rows))[0]
    wanted = sorted(entries)[2 * MANIFEST_ROW_GROUP + 1]

    assert catalog.get(wanted) == entries[wanted]
    assert rows_read == [MANIFEST_ROW_GROUP]  # one row group of the manifest, no other read
    running = catalog.advance(entries[wanted], SceneStatus.RUNNING)
    assert catalog.current(entries[wanted]) == running == catalog.get(wanted)
    assert catalog.select([SceneStatus.RUNNING]).column("scene_id").to_pylist() == [wanted]
    assert catalog.select([SceneStatus.PENDING], [wanted, sorted(entries)[0]]).num_rows == 1
    with pytest.raises(KeyError):
        catalog.get("missing-0123456789")
