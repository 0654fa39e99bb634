"""Object stores: the same behaviour on the local directory and on an S3 server, plus key rules."""

from __future__ import annotations

import hashlib
import pickle
import re
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import urllib3
from minio.error import S3Error
from pydantic import SecretStr

from worldstereo.errors import ConfigurationError, InvalidKeyError, StorageError
from worldstereo.storage import LocalStore, ObjectNotFoundError, ObjectStore, S3Store, open_store
from worldstereo.storage.keys import (
    MAX_KEY_BYTES,
    catalog_key,
    output_key,
    record_key,
    scene_id_from_key,
    scene_prefix,
    validate_bucket,
    validate_key,
)

MiB = 1024 * 1024
ACCESS_KEY = "leak-check-access-7c1d"
SECRET_KEY = "leak-check-secret-e93a0f"


def _keys(store: ObjectStore, bucket: str, prefix: str = "", recursive: bool = True) -> list[str]:
    """Listed keys, sorted: servers list in different orders."""
    return sorted(entry.key for entry in store.list(bucket, prefix, recursive))


# --- keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "non-empty"),
        ("/scenes/a.png", "leading '/'"),
        ("scenes/../secrets", "relative segment '..'"),
        ("scenes/./a.png", "relative segment '.'"),
        ("..", "relative segment '..'"),
        ("scenes//a.png", "empty segment"),
        ("scenes/", "empty segment"),
        ("scenes\\a.png", "backslash"),
        ("scenes/a\x00.png", "control character '\\x00'"),
        ("scenes/a\n.png", "control character '\\n'"),
        ("scenes/a\x7f.png", "control character '\\x7f'"),
        ("scenes/a\x85.png", "control character '\\x85'"),
        ("é" * 513, "1026 bytes of UTF-8"),
        ("scenes/\udcff.png", "UTF-8"),
        ("scenes/a.png.partial", "reserved suffix"),
    ],
)
def test_bad_keys_are_rejected_with_the_problem_named(store: ObjectStore, storage_settings, key, problem):
    bucket = storage_settings.work_bucket
    with pytest.raises(InvalidKeyError, match=re.escape(problem)):
        store.put_bytes(bucket, key, b"x")
    with pytest.raises(InvalidKeyError, match=re.escape(problem)):
        store.get_bytes(bucket, key)
    with pytest.raises(InvalidKeyError):
        store.exists(bucket, key)
    assert _keys(store, bucket) == []


@pytest.mark.parametrize(
    "bucket", ["ab", "UPPER", "under_score", "-start", "end-", "a..b", "192.168.1.2", "xn--abc", "x" * 64]
)
def test_bad_buckets_are_rejected(store: ObjectStore, bucket):
    with pytest.raises(InvalidKeyError, match="invalid bucket"):
        store.put_bytes(bucket, "a.txt", b"x")
    with pytest.raises(InvalidKeyError, match="invalid bucket"):
        list(store.list(bucket))


def test_good_keys_and_buckets_pass_unchanged():
    for key in ["a", "scenes/x/outputs/video.mp4", "ü/ñ é.png", ".hidden/.a", "a" * MAX_KEY_BYTES, "..a/b.."]:
        assert validate_key(key) == key
    for bucket in ["abc", "worldstereo-work", "a.b-c.d9", "x" * 63]:
        assert validate_bucket(bucket) == bucket


def test_scene_id_is_deterministic_safe_and_distinct():
    scene_id = scene_id_from_key("inputs/Living Room #1.PNG")
    assert scene_id == scene_id_from_key("inputs/Living Room #1.PNG")
    assert re.fullmatch(r"living-room-1-[0-9a-f]{10}", scene_id)
    assert scene_id_from_key("other/Living Room #1.PNG") != scene_id
    assert re.fullmatch(r"cafe-[0-9a-f]{10}", scene_id_from_key("Café.jpg"))
    assert re.fullmatch(r"scene-[0-9a-f]{10}", scene_id_from_key("全景.jpg"))
    long_id = scene_id_from_key("x" * 500 + ".png")
    assert len(long_id) <= 51 and re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", long_id)


def test_work_bucket_layout():
    scene_id = scene_id_from_key("room.png")
    assert catalog_key() == "catalog/catalog.parquet"
    assert scene_prefix(scene_id) == f"scenes/{scene_id}/"
    assert record_key(scene_id, "generate", "orbit") == f"scenes/{scene_id}/records/generate-orbit.parquet"
    assert record_key(scene_id, "fuse") == f"scenes/{scene_id}/records/fuse.parquet"
    assert output_key(scene_id, "orbit", "video.mp4") == f"scenes/{scene_id}/outputs/orbit/video.mp4"
    with pytest.raises(InvalidKeyError, match="stage"):
        record_key(scene_id, "gen-erate")
    with pytest.raises(InvalidKeyError, match="scene id"):
        scene_prefix("../etc")
    with pytest.raises(InvalidKeyError, match="relative segment"):
        output_key(scene_id, "..", "x")


# --- objects ----------------------------------------------------------------------------------


def test_put_get_bytes_and_overwrite(store: ObjectStore, storage_settings):
    bucket = storage_settings.work_bucket
    store.put_bytes(bucket, "a/b.bin", b"first")
    assert store.get_bytes(bucket, "a/b.bin") == b"first"
    store.put_bytes(bucket, "a/b.bin", b"second, longer")
    assert store.get_bytes(bucket, "a/b.bin") == b"second, longer"
    store.put_bytes(bucket, "empty", b"")
    assert store.get_bytes(bucket, "empty") == b""
    assert _keys(store, bucket) == ["a/b.bin", "empty"]


def test_put_and_get_files(store: ObjectStore, storage_settings, tmp_path: Path):
    bucket = storage_settings.input_bucket
    source = tmp_path / "source.png"
    source.write_bytes(bytes(range(256)) * 10)
    store.put_file(bucket, "inputs/room.png", source)
    target = store.get_file(bucket, "inputs/room.png", tmp_path / "out" / "deep" / "room.png")
    assert target.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["room.png"]
    with pytest.raises(FileNotFoundError):
        store.put_file(bucket, "inputs/none.png", tmp_path / "none.png")
    with pytest.raises(ObjectNotFoundError):
        store.get_file(bucket, "inputs/none.png", tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_list_by_prefix_recursive_and_not(store: ObjectStore, storage_settings):
    bucket = storage_settings.work_bucket
    contents = {"a/1.txt": 1, "a/b/2.txt": 2, "a/b/c/3.txt": 3, "a-x.txt": 4, "ab/4.txt": 5, "b.txt": 6}
    for key, size in contents.items():
        store.put_bytes(bucket, key, b"z" * size)

    everything = sorted(store.list(bucket), key=lambda e: e.key)
    assert [e.key for e in everything] == ["a-x.txt", "a/1.txt", "a/b/2.txt", "a/b/c/3.txt", "ab/4.txt", "b.txt"]
    assert all(e.size == contents[e.key] and not e.is_prefix for e in everything)
    assert _keys(store, bucket, "a/") == ["a/1.txt", "a/b/2.txt", "a/b/c/3.txt"]
    assert _keys(store, bucket, "a") == ["a-x.txt", "a/1.txt", "a/b/2.txt", "a/b/c/3.txt", "ab/4.txt"]
    assert _keys(store, bucket, "a/b/c/3") == ["a/b/c/3.txt"]
    assert _keys(store, bucket, "zzz") == []

    top = sorted(store.list(bucket, "", recursive=False), key=lambda e: e.key)
    assert [(e.key, e.is_prefix) for e in top] == [
        ("a-x.txt", False),
        ("a/", True),
        ("ab/", True),
        ("b.txt", False),
    ]
    assert _keys(store, bucket, "a/", recursive=False) == ["a/1.txt", "a/b/"]
    assert _keys(store, bucket, "a", recursive=False) == ["a-x.txt", "a/", "ab/"]
    assert _keys(store, "ws-missing-bucket") == []


def test_listed_version_changes_exactly_when_content_is_written(store: ObjectStore, storage_settings, tmp_path: Path):
    bucket = storage_settings.work_bucket
    versions = lambda: {e.key: e.version for e in store.list(bucket)}  # noqa: E731
    store.put_bytes(bucket, "in/a.png", b"first")
    store.put_bytes(bucket, "in/b.png", b"other")
    first = versions()
    assert all(first.values()) and first["in/a.png"] != first["in/b.png"]
    assert versions() == first  # listing twice reads the same versions

    store.put_bytes(bucket, "in/a.png", b"again")  # same size, new bytes
    second = versions()
    assert second["in/a.png"] != first["in/a.png"] and second["in/b.png"] == first["in/b.png"]
    (tmp_path / "c.png").write_bytes(b"third")
    store.put_file(bucket, "in/a.png", tmp_path / "c.png")
    assert versions()["in/a.png"] not in (first["in/a.png"], second["in/a.png"])
    assert [e.version for e in store.list(bucket, "", recursive=False)] == [""]  # the prefix in/


def test_exists_stat_delete(store: ObjectStore, storage_settings):
    bucket = storage_settings.work_bucket
    data = b"hello, world"
    before = datetime.now(UTC) - timedelta(seconds=5)
    store.put_bytes(bucket, "x/y.txt", data)
    assert store.exists(bucket, "x/y.txt")
    assert not store.exists(bucket, "x/y")
    assert not store.exists(bucket, "x")
    info = store.stat(bucket, "x/y.txt")
    assert info.key == "x/y.txt" and info.size == len(data)
    assert info.etag == hashlib.md5(data).hexdigest()
    assert before <= info.modified <= datetime.now(UTC) + timedelta(seconds=5)

    store.put_bytes(bucket, "x/y.txt", b"changed")
    assert store.stat(bucket, "x/y.txt").etag != info.etag

    store.delete(bucket, "x/y.txt")
    assert not store.exists(bucket, "x/y.txt")
    store.delete(bucket, "x/y.txt")
    with pytest.raises(ObjectNotFoundError):
        store.get_bytes(bucket, "x/y.txt")
    with pytest.raises(ObjectNotFoundError):
        store.stat(bucket, "x/y.txt")
    assert not store.exists("ws-missing-bucket", "x/y.txt")
    with pytest.raises(ObjectNotFoundError):
        store.get_bytes("ws-missing-bucket", "x/y.txt")


def test_delete_prefix(store: ObjectStore, storage_settings):
    bucket = storage_settings.work_bucket
    for key in ["scenes/s1/a", "scenes/s1/deep/b", "scenes/s10/c", "scenes/s2/d"]:
        store.put_bytes(bucket, key, b"1")
    assert store.delete_prefix(bucket, "scenes/s1/") == 2
    assert _keys(store, bucket) == ["scenes/s10/c", "scenes/s2/d"]
    levels = _keys(store, bucket, "scenes/", recursive=False)  # the emptied scenes/s1/ may still be listed
    assert set(levels) - {"scenes/s1/"} == {"scenes/s10/", "scenes/s2/"}
    assert store.delete_prefix(bucket, "scenes/s1/") == 0
    assert store.delete_prefix(bucket, "") == 2
    assert _keys(store, bucket) == []
    store.put_bytes(bucket, "scenes", b"a key where a level used to be")
    assert store.get_bytes(bucket, "scenes") == b"a key where a level used to be"


def test_put_if_absent_creates_once(store: ObjectStore, storage_settings):
    bucket = storage_settings.work_bucket
    assert store.put_if_absent(bucket, "locks/scene.lock", b"first")
    assert not store.put_if_absent(bucket, "locks/scene.lock", b"second")
    assert store.get_bytes(bucket, "locks/scene.lock") == b"first"
    assert _keys(store, bucket) == ["locks/scene.lock"]
    store.delete(bucket, "locks/scene.lock")
    assert store.put_if_absent(bucket, "locks/scene.lock", b"third")
    assert store.get_bytes(bucket, "locks/scene.lock") == b"third"
    store.require_conditional_writes(bucket)  # every backend honours them; the probe leaves nothing behind
    assert _keys(store, bucket) == ["locks/scene.lock"]


def test_copy_is_independent_of_its_source(store: ObjectStore, storage_settings):
    bucket = storage_settings.work_bucket
    store.put_bytes(bucket, "exports/images/a.png", b"pixels")
    store.put_bytes(bucket, "exports/mirror/a.png", b"an older object under the copy's key")
    store.copy(bucket, "exports/images/a.png", "exports/mirror/a.png")
    assert store.get_bytes(bucket, "exports/mirror/a.png") == b"pixels"
    assert store.stat(bucket, "exports/mirror/a.png").etag == store.stat(bucket, "exports/images/a.png").etag
    store.put_bytes(bucket, "exports/images/a.png", b"replaced")
    assert store.get_bytes(bucket, "exports/mirror/a.png") == b"pixels"
    store.delete(bucket, "exports/images/a.png")
    assert store.get_bytes(bucket, "exports/mirror/a.png") == b"pixels"
    store.copy(bucket, "exports/mirror/a.png", "exports/mirror/a.png")
    assert store.get_bytes(bucket, "exports/mirror/a.png") == b"pixels"
    for target in ("exports/mirror/b.png", "exports/images/a.png"):
        with pytest.raises(ObjectNotFoundError, match="exports/images/a.png"):
            store.copy(bucket, "exports/images/a.png", target)
    with pytest.raises(InvalidKeyError):
        store.copy(bucket, "exports/mirror/a.png", "exports//b.png")
    assert _keys(store, bucket) == ["exports/mirror/a.png"]


def test_large_objects_round_trip_byte_exact(store: ObjectStore, storage_settings, tmp_path: Path):
    bucket = storage_settings.work_bucket
    data = np.random.default_rng(7).bytes(11 * MiB)
    store.put_bytes(bucket, "big/bytes.bin", data)
    assert store.get_bytes(bucket, "big/bytes.bin") == data
    source = tmp_path / "big.bin"
    source.write_bytes(data[::-1])
    store.put_file(bucket, "big/file.bin", source)
    assert store.get_file(bucket, "big/file.bin", tmp_path / "back.bin").read_bytes() == data[::-1]
    info = store.stat(bucket, "big/bytes.bin")
    assert info.size == 11 * MiB
    if isinstance(store, S3Store):
        # Multipart ETags end in the part count: 11 MiB in 5 MiB parts is 3 parts.
        assert info.etag.endswith("-3")
        assert store.stat(bucket, "big/file.bin").etag.endswith("-3")
    else:
        assert info.etag == hashlib.md5(data).hexdigest()


def test_parquet_round_trip(store: ObjectStore, storage_settings):
    bucket = storage_settings.work_bucket
    table = pa.table(
        {
            "name": ["a", "b", None],
            "value": pa.array([1.5, float("nan"), -2.0], pa.float64()),
            "tags": [["x"], [], ["y", "z"]],
            "when": pa.array([datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)] * 3, pa.timestamp("us", tz="UTC")),
        }
    )
    store.write_table(bucket, "tables/t.parquet", table)
    back = store.read_table(bucket, "tables/t.parquet")
    assert back.schema.equals(table.schema)
    assert back.column("name").to_pylist() == ["a", "b", None]
    np.testing.assert_array_equal(back.column("value").to_numpy(), [1.5, np.nan, -2.0])
    assert back.column("tags").to_pylist() == [["x"], [], ["y", "z"]]
    assert back.column("when").to_pylist() == table.column("when").to_pylist()
    assert store.read_table(bucket, "tables/t.parquet", columns=["tags"]).column_names == ["tags"]
    assert _keys(store, bucket) == ["tables/t.parquet"]
    with pytest.raises(ObjectNotFoundError):
        store.read_table(bucket, "tables/missing.parquet")


# --- credentials and configuration ------------------------------------------------------------


def test_secrets_never_leak(storage_settings):
    settings = storage_settings.model_copy(
        update={"access_key": SecretStr(ACCESS_KEY), "secret_key": SecretStr(SECRET_KEY)}
    )
    store = open_store(settings)
    texts = [repr(store), str(store), repr(settings), str(settings)]
    with pytest.raises((ObjectNotFoundError, StorageError)) as missing:  # a server checking credentials refuses
        store.get_bytes(settings.work_bucket, "no/such/key")
    texts.append("".join(traceback.format_exception(missing.value)))
    with pytest.raises(InvalidKeyError) as invalid:
        store.put_bytes(settings.work_bucket, "../escape", b"")
    texts.append("".join(traceback.format_exception(invalid.value)))
    for text in texts:
        assert SECRET_KEY not in text and ACCESS_KEY not in text


def test_store_survives_pickling(store: ObjectStore, storage_settings):
    store.put_bytes(storage_settings.work_bucket, "k", b"v")
    clone = pickle.loads(pickle.dumps(store))
    assert type(clone) is type(store) and repr(clone) == repr(store)
    assert clone.get_bytes(storage_settings.work_bucket, "k") == b"v"


def test_open_store_picks_the_backend(local_settings, s3_settings):
    assert isinstance(open_store(local_settings), LocalStore)
    assert isinstance(open_store(s3_settings), S3Store)
    with pytest.raises(ConfigurationError, match="endpoint"):
        open_store(s3_settings.model_copy(update={"endpoint": "http://127.0.0.1:9000/path"}))


# --- backend specifics ------------------------------------------------------------------------


def test_a_server_without_conditional_writes_is_refused_by_name(s3_settings, monkeypatch):
    store = open_store(s3_settings)
    bucket = s3_settings.work_bucket
    store.require_conditional_writes(bucket)  # the real server honours them
    conditional_put = store._client._put_object

    def reject_conditions(bucket, key, data, headers=None, query_params=None):
        if headers and "If-None-Match" in headers:
            response = urllib3.HTTPResponse(status=501)
            raise S3Error(response, "NotImplemented", "not implemented", key, "req", "host")
        return conditional_put(bucket, key, data, headers=headers, query_params=query_params)

    monkeypatch.setattr(store._client, "_put_object", reject_conditions)
    with pytest.raises(StorageError, match="NotImplemented"):
        store.put_if_absent(bucket, "once", b"first")
    assert not store.exists(bucket, "once")  # no stat-then-put behind the refusal
    with pytest.raises(ConfigurationError) as refused:
        store.require_conditional_writes(bucket)
    assert f"http://{s3_settings.endpoint}" in str(refused.value) and "If-None-Match" in str(refused.value)

    def ignore_conditions(bucket, key, data, headers=None, query_params=None):
        plain = {k: v for k, v in (headers or {}).items() if not k.startswith("If-")}
        return conditional_put(bucket, key, data, headers=plain, query_params=query_params)

    monkeypatch.setattr(store._client, "_put_object", ignore_conditions)
    with pytest.raises(ConfigurationError, match="ignores the conditions"):
        store.require_conditional_writes(bucket)
    assert _keys(store, bucket, "probes/") == []


def test_local_store_layout_and_collisions(local_settings):
    store = open_store(local_settings)
    bucket = local_settings.work_bucket
    store.put_bytes(bucket, "scenes/s/outputs/a.bin", b"a")
    store.write_table(bucket, "scenes/s/records/r.parquet", pa.table({"x": [1]}))
    store.put_if_absent(bucket, "scenes/s/done", b"")
    root = Path(local_settings.root).resolve()
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == [
        f"{bucket}/scenes/s/done",
        f"{bucket}/scenes/s/outputs/a.bin",
        f"{bucket}/scenes/s/records/r.parquet",
    ]
    with pytest.raises(InvalidKeyError, match="collides"):
        store.put_bytes(bucket, "scenes/s/outputs/a.bin/deeper", b"")
    with pytest.raises(InvalidKeyError, match="collides"):
        store.put_bytes(bucket, "scenes/s/outputs", b"")
    with pytest.raises(InvalidKeyError, match="collides"):
        store.put_if_absent(bucket, "scenes/s/outputs", b"")
    assert store.get_bytes(bucket, "scenes/s/outputs/a.bin") == b"a"
