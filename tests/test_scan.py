"""Input scanning: only new and changed images are read, on both backends."""

from __future__ import annotations

import json

import pytest

from worldstereo.catalog import content_hash
from worldstereo.storage import ObjectStore
from worldstereo.catalog.scan import input_kind, scan_inputs
from worldstereo.catalog.schemas import InputKind


@pytest.fixture
def reads(store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Keys ``store.get_bytes`` is asked for, in order (the store itself is real)."""
    asked: list[str] = []
    real = store.get_bytes

    def counted(bucket: str, key: str) -> bytes:
        asked.append(key)
        return real(bucket, key)

    monkeypatch.setattr(store, "get_bytes", counted)
    return asked


def test_only_new_and_changed_images_are_read(store: ObjectStore, storage_settings, reads: list[str]):
    bucket = storage_settings.input_bucket
    for name in ("a", "b", "c"):
        store.put_bytes(bucket, f"drops/{name}.png", name.encode() * 10)
    store.put_bytes(bucket, "drops/a.depth.npy", b"sidecar, not an input")
    store.put_bytes(bucket, "elsewhere/d.png", b"outside the prefix")

    first = scan_inputs(store, bucket, "drops/", {})
    assert first.listed == 3 and [i.key for i in first.inputs] == ["drops/a.png", "drops/b.png", "drops/c.png"]
    assert [i.content_hash for i in first.inputs] == [content_hash(n.encode() * 10) for n in "abc"]
    known = {i.key: i.version for i in first.inputs}

    reads.clear()
    store.put_bytes(bucket, "drops/b.png", b"B" * 10)  # replaced
    store.put_bytes(bucket, "drops/e.png", b"new")  # added
    second = scan_inputs(store, bucket, "drops/", known)
    assert second.listed == 4
    assert [(i.key, i.content_hash) for i in second.inputs] == [
        ("drops/b.png", content_hash(b"B" * 10)),
        ("drops/e.png", content_hash(b"new")),
    ]
    images_read = [key for key in reads if key.endswith(".png")]
    assert images_read == ["drops/b.png", "drops/e.png"]  # a and c were not read again

    reads.clear()
    known |= {i.key: i.version for i in second.inputs}
    assert scan_inputs(store, bucket, "drops/", known).inputs == [] and reads == []


def test_input_kind_follows_the_camera_file(store: ObjectStore, storage_settings):
    bucket = storage_settings.input_bucket
    store.put_bytes(bucket, "p.camera.json", json.dumps({"kind": "panorama"}).encode())
    store.put_bytes(bucket, "q.camera.json", json.dumps({"kind": "perspective", "note": "panorama"}).encode())
    store.put_bytes(bucket, "r.camera.json", b"{not json")
    assert input_kind(store, bucket, "p.png") is InputKind.PANORAMA
    assert input_kind(store, bucket, "q.png") is InputKind.PERSPECTIVE
    assert input_kind(store, bucket, "r.png") is InputKind.PERSPECTIVE  # loading it fails the scene later
    assert input_kind(store, bucket, "s.png") is InputKind.PERSPECTIVE  # no camera file


def test_upload_command_puts_sidecars_and_images_into_the_input_bucket(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from worldstereo.cli import app
    from worldstereo.config import StorageSettings
    from worldstereo.storage import open_store
    from worldstereo.synthetic.samples import write_samples

    monkeypatch.setenv("WORLDSTEREO_STORAGE__ROOT", str(tmp_path / "store"))
    settings = StorageSettings(root=tmp_path / "store")
    store, bucket = open_store(settings), settings.input_bucket
    room = next(p for p in write_samples(tmp_path / "local") if p.stem == "room")
    bare = tmp_path / "bare.png"
    bare.write_bytes(room.read_bytes())

    run = CliRunner().invoke(app, ["upload", str(room), str(bare), "--prefix", "drops/"])
    assert run.exit_code == 0, run.output
    assert run.output.split() == [f"{bucket}/drops/room.png", f"{bucket}/drops/bare.png"]
    assert sorted(e.key for e in store.list(bucket)) == [
        "drops/bare.png", "drops/room.camera.json", "drops/room.depth.npy", "drops/room.png"
    ]
    assert store.get_bytes(bucket, "drops/room.depth.npy") == (tmp_path / "local" / "room.depth.npy").read_bytes()

    room.write_bytes(b"replaced")  # not a PNG any more: skipped with a warning, uploaded with --force
    skipped = CliRunner().invoke(app, ["upload", str(room), "--prefix", "drops/"])
    assert skipped.exit_code == 0 and skipped.stdout == ""
    assert f"{room} does not start with a PNG signature" in skipped.stderr and "skipped" in skipped.stderr
    assert store.get_bytes(bucket, "drops/room.png") == bare.read_bytes()
    forced = CliRunner().invoke(app, ["upload", str(room), "--prefix", "drops/", "--force"])
    assert forced.exit_code == 0 and forced.stdout.split() == [f"{bucket}/drops/room.png"]
    assert store.get_bytes(bucket, "drops/room.png") == b"replaced"

    samples = CliRunner().invoke(app, ["upload", "--samples"])
    assert samples.exit_code == 0 and f"{bucket}/samples/room.png" in samples.output.split()
    for bad in ([str(tmp_path / "room.depth.npy")], [str(tmp_path / "missing.png")], []):
        refused = CliRunner().invoke(app, ["upload", *bad])
        assert refused.exit_code == 2, refused.output
    assert store.get_bytes(bucket, "drops/room.png") == b"replaced"
