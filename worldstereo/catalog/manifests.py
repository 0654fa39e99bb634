"""Parquet manifests in the work bucket: the scene catalog and per-scene stage records."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from worldstereo.errors import InvalidKeyError, PermanentError, StorageError
from worldstereo.storage.base import ObjectNotFoundError, ObjectStore, read_parquet
from worldstereo.storage.keys import (
    catalog_key,
    catalog_update_key,
    catalog_updates_prefix,
    record_key,
    records_prefix,
    scene_id_from_key,
    validate_key,
    validate_name,
    validate_scene_id,
)
from worldstereo.catalog.schemas import (
    CATALOG_SCHEMA,
    STAGE_RECORD_SCHEMA,
    InputKind,
    SceneStatus,
    conform,
)

Clock = Callable[[], datetime]

_CHUNK = 64  # status updates a reader takes at a time
_CAS_ATTEMPTS = 20  # manifest replacements tried before giving up (each loses only to another writer's success)
COMPACT_PER_PASS = 20_000  # update objects folded by one manifest write
UPDATE_SUFFIXES = (".json", ".parquet")  # status changes: JSON; Parquet from earlier versions
MANIFEST_ROW_GROUP = 4096  # rows per manifest row group: what Catalog.get reads of a large catalog

# Allowed status changes; a failed or interrupted scene is retried by going back to running.
_TRANSITIONS: Mapping[SceneStatus, frozenset[SceneStatus]] = {
    SceneStatus.PENDING: frozenset({SceneStatus.RUNNING, SceneStatus.FAILED}),
    SceneStatus.RUNNING: frozenset({SceneStatus.DONE, SceneStatus.FAILED, SceneStatus.PENDING}),
    SceneStatus.FAILED: frozenset({SceneStatus.RUNNING, SceneStatus.PENDING}),
    SceneStatus.DONE: frozenset({SceneStatus.PENDING}),
}


def utc_now() -> datetime:
    """The default clock."""
    return datetime.now(UTC)


def _utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return moment.astimezone(UTC)


def content_hash(data: bytes) -> str:
    """Identity of an input's bytes: two keys with the same hash are the same scene."""
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


@dataclass(frozen=True, slots=True)
class InputObject:
    """An input found in the input bucket, ready to register; ``version`` is its listing's version."""

    key: str
    kind: InputKind
    content_hash: str
    version: str | None = None

    @classmethod
    def from_bytes(cls, key: str, kind: InputKind, data: bytes, version: str | None = None) -> InputObject:
        return cls(key=key, kind=kind, content_hash=content_hash(data), version=version)


@dataclass(frozen=True, slots=True)
class SceneEntry:
    """One catalog row."""

    scene_id: str
    input_key: str
    input_kind: InputKind
    content_hash: str
    status: SceneStatus
    attempts: int
    error: str | None
    created_at: datetime
    updated_at: datetime
    input_version: str | None = None

    def __post_init__(self) -> None:
        validate_scene_id(self.scene_id)
        validate_key(self.input_key)
        object.__setattr__(self, "input_kind", InputKind(self.input_kind))
        object.__setattr__(self, "status", SceneStatus(self.status))
        object.__setattr__(self, "created_at", _utc(self.created_at, "created_at"))
        object.__setattr__(self, "updated_at", _utc(self.updated_at, "updated_at"))
        if self.attempts < 0:
            raise ValueError(f"attempts must be >= 0, got {self.attempts}")
        if (self.error is not None) != (self.status is SceneStatus.FAILED):
            raise ValueError(f"scene {self.scene_id}: an error message goes with status failed, and only with it")


@dataclass(frozen=True, slots=True)
class StageRecord:
    """A finished stage of a scene (per trajectory where it applies) and the objects it wrote."""

    scene_id: str
    stage: str
    output_keys: tuple[str, ...]
    duration_s: float
    trajectory: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    finished_at: datetime = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        validate_scene_id(self.scene_id)
        validate_name(self.stage, "stage")
        if self.trajectory is not None:
            validate_name(self.trajectory, "trajectory")
        object.__setattr__(self, "output_keys", tuple(validate_key(k) for k in self.output_keys))
        object.__setattr__(self, "metrics", MappingProxyType({str(k): float(v) for k, v in self.metrics.items()}))
        object.__setattr__(self, "finished_at", _utc(self.finished_at, "finished_at"))
        if not self.duration_s >= 0:
            raise ValueError(f"duration_s must be >= 0, got {self.duration_s}")

    @property
    def key(self) -> str:
        """Where this record lives in the work bucket."""
        return record_key(self.scene_id, self.stage, self.trajectory)


def _catalog_row(entry: SceneEntry) -> dict[str, Any]:
    """An entry's catalog columns (its fields are immutable values: no copies, unlike ``asdict``)."""
    return {name: getattr(entry, name) for name in CATALOG_SCHEMA.names}


def _catalog_table(entries: Iterable[SceneEntry]) -> pa.Table:
    return pa.Table.from_pylist([_catalog_row(entry) for entry in entries], schema=CATALOG_SCHEMA)


def _records_table(records: Iterable[StageRecord]) -> pa.Table:
    rows = [
        {
            "scene_id": r.scene_id,
            "stage": r.stage,
            "trajectory": r.trajectory,
            "output_keys": list(r.output_keys),
            "metrics": dict(r.metrics),
            "duration_s": r.duration_s,
            "finished_at": r.finished_at,
        }
        for r in records
    ]
    return pa.Table.from_pylist(rows, schema=STAGE_RECORD_SCHEMA)


def _record_from_row(row: dict[str, Any]) -> StageRecord:
    return StageRecord(**{**row, "output_keys": tuple(row["output_keys"]), "metrics": dict(row["metrics"])})


@dataclass(frozen=True, slots=True)
class Registration:
    """What :meth:`Catalog.register` changed: new scenes, and known inputs whose content changed."""

    added: list[SceneEntry]
    replaced: list[SceneEntry]

    @property
    def scene_ids(self) -> list[str]:
        """Every scene that is now pending because of this registration."""
        return [entry.scene_id for entry in self.added + self.replaced]


class Catalog:
    """The scene catalog: a Parquet manifest in the work bucket plus one small object per status change.

    A status change writes only its scene's update object (``catalog/updates/{scene_id}/{stamp}.json``),
    so it costs the same however large the catalog is; readers overlay the updates on the manifest,
    the newer row winning. Registration and :meth:`compact` rewrite the manifest with the updates
    folded in, then delete exactly the update objects they folded.

    The manifest is handled as Arrow columns (sorted by scene id, in row groups whose statistics let
    :meth:`get` read one of them): a batch reads it once, and nothing per scene reads it whole.

    Many writers may share it: each status change has a key of its own (a change written while a
    compaction runs is never deleted unfolded), and the manifest is replaced only by a conditional
    write against the version that was read (two compactions or registrations at once: one retries).
    Which batch runs a scene is decided by :class:`~worldstereo.catalog.claims.SceneClaims`.
    """

    def __init__(self, store: ObjectStore, bucket: str, *, clock: Clock = utc_now) -> None:
        self._store = store
        self._bucket = bucket
        self._key = catalog_key()
        self._clock = clock

    def table(self) -> pa.Table:
        """All rows by scene id, updates applied; an empty table before the first write."""
        return _overlay(self._manifest_versioned()[0], self._updates()[1])

    def entries(self) -> list[SceneEntry]:
        """All rows as entries, by scene id."""
        return entries_of(self.table())

    def get(self, scene_id: str) -> SceneEntry:
        """One scene's current row (its manifest row group and its updates); ``KeyError`` if it is not in the catalog."""
        validate_scene_id(scene_id)
        try:
            rows = self._store.read_table(self._bucket, self._key, row_groups=lambda meta: _groups_holding(meta, scene_id))
        except ObjectNotFoundError:
            rows = CATALOG_SCHEMA.empty_table()
        rows = conform(rows, CATALOG_SCHEMA, f"{self._bucket}/{self._key}")
        rows = rows.filter(pc.equal(rows["scene_id"], scene_id))
        found = entries_of(_overlay(rows, self._updates(scene_id)[1]))
        if not found:
            raise KeyError(f"scene {scene_id!r} is not in the catalog")
        return found[0]

    def current(self, entry: SceneEntry) -> SceneEntry:
        """``entry`` with its scene's own status changes applied: reads only that scene's update objects."""
        return entries_of(_overlay(_catalog_table([entry]), self._updates(entry.scene_id)[1]))[0]

    def by_status(self, *statuses: SceneStatus) -> list[SceneEntry]:
        """Scenes in any of ``statuses``, by scene id."""
        return entries_of(self.select(statuses))

    def select(self, statuses: Iterable[SceneStatus], scene_ids: Iterable[str] | None = None) -> pa.Table:
        """Rows in any of ``statuses`` (and among ``scene_ids`` if given), by scene id, as a table."""
        table = self.table()
        mask = pc.is_in(table["status"], pa.array([str(SceneStatus(s)) for s in statuses], pa.string()))
        if scene_ids is not None:
            mask = pc.and_(mask, pc.is_in(table["scene_id"], pa.array(list(scene_ids), pa.string())))
        return table.filter(mask)

    def input_versions(self) -> dict[str, str | None]:
        """Registered input key -> the listing version recorded when it was last hashed."""
        table = self.table()
        return dict(zip(table["input_key"].to_pylist(), table["input_version"].to_pylist()))

    def register(
        self, inputs: Iterable[InputObject], on_replace: Callable[[SceneEntry], None] | None = None
    ) -> Registration:
        """Add new inputs as pending scenes and take in known inputs whose content changed.

        A new input is skipped when its content hash is already registered (the same bytes under
        another key are the same scene); inputs are taken in key order, so of several new keys with
        equal content the smallest one wins. A known key with a new content hash sends its scene
        back to pending with the new hash; ``on_replace(old_entry)`` runs first (to drop the scene's
        stage records), so a crash in between leaves the old hash and the change is seen again. A
        known key with the same hash only has its version recorded.
        """
        inputs = sorted(inputs, key=lambda i: i.key)
        for _ in range(_CAS_ATTEMPTS):
            registration = self._register_once(inputs, on_replace)
            if registration is not None:
                return registration
        raise StorageError(f"the catalog manifest changed under {_CAS_ATTEMPTS} registrations in a row")

    def _register_once(self, inputs: list[InputObject], on_replace: Callable[[SceneEntry], None] | None
                       ) -> Registration | None:
        """One attempt of :meth:`register`; None if another writer replaced the manifest meanwhile."""
        manifest, etag = self._manifest_versioned()
        folded, updates = self._updates()
        current = _overlay(manifest, updates)
        columns = {name: current[name].to_pylist() for name in ("scene_id", "input_key", "content_hash", "input_version")}
        row_of = {key: i for i, key in enumerate(columns["input_key"])}
        scene_ids, hashes = set(columns["scene_id"]), set(columns["content_hash"])
        now = self._clock()
        added: list[SceneEntry] = []
        replaced: list[SceneEntry] = []
        changed: dict[str, SceneEntry] = {}
        for item in inputs:
            row = row_of.get(item.key)
            if row is not None:
                if columns["content_hash"][row] == item.content_hash and columns["input_version"][row] == item.version:
                    continue
                known = changed.get(columns["scene_id"][row]) or entries_of(current.slice(row, 1))[0]
                if known.content_hash != item.content_hash:
                    if on_replace is not None:
                        on_replace(known)
                    entry = replace(known, content_hash=item.content_hash, input_version=item.version,
                                    status=SceneStatus.PENDING, error=None, updated_at=now)
                    replaced.append(entry)
                else:
                    entry = replace(known, input_version=item.version)
            elif item.content_hash in hashes:
                continue
            else:
                entry = _new_entry(item, scene_ids, changed, now)
                added.append(entry)
                scene_ids.add(entry.scene_id)
            changed[entry.scene_id] = entry
            hashes.add(item.content_hash)
        if changed:
            kept = current.filter(pc.invert(pc.is_in(current["scene_id"], pa.array(list(changed), pa.string()))))
            if not self._write(pa.concat_tables([kept, _catalog_table(changed.values())]), folded, etag):
                return None
        return Registration(added, replaced)

    def set_status(self, scene_id: str, status: SceneStatus, error: str | None = None) -> SceneEntry:
        """Move a scene to ``status`` (see :meth:`advance`), reading its current row first."""
        return self.advance(self.get(scene_id), status, error)

    def advance(self, entry: SceneEntry, status: SceneStatus, error: str | None = None) -> SceneEntry:
        """Move the scene of ``entry`` (its current row) to ``status`` with one small write and no read.

        The scene's older status changes, superseded now, are deleted (a listing of its own updates), so a
        compaction folds one object per changed scene. Entering running counts an attempt; failed needs an
        error message.
        """
        status = SceneStatus(status)
        if status not in _TRANSITIONS[entry.status]:
            raise ValueError(f"scene {entry.scene_id}: cannot go from {entry.status} to {status}")
        if status is SceneStatus.FAILED and not error:
            raise ValueError(f"scene {entry.scene_id}: a failed status needs an error message")
        updated = replace(
            entry,
            status=status,
            attempts=entry.attempts + (status is SceneStatus.RUNNING),
            error=error if status is SceneStatus.FAILED else None,
            updated_at=self._clock(),
        )
        stamp = f"{int(updated.updated_at.timestamp() * 1e9):020d}_{uuid.uuid4().hex[:12]}"
        key = catalog_update_key(entry.scene_id, stamp)
        self._store.put_bytes(self._bucket, key, _update_json(updated))
        self._store.delete_many(self._bucket, [k for k in self._update_keys(entry.scene_id) if k < key])
        return updated

    def compact(self, per_pass: int = COMPACT_PER_PASS) -> int:
        """Fold the pending status changes into the manifest and delete them; returns how many were folded.

        A pass folds at most ``per_pass`` update objects with one manifest write and one multi-object delete;
        passes go on while they are full (changes written during the last pass wait for the next compaction).
        """
        folded_total, conflicts = 0, 0
        while conflicts < _CAS_ATTEMPTS:
            manifest, etag = self._manifest_versioned()
            keys = self._update_keys()[:per_pass]
            if not keys:
                return folded_total
            if not self._write(_overlay(manifest, self._read_updates(keys)), keys, etag):
                conflicts += 1
                continue
            folded_total += len(keys)
            if len(keys) < per_pass:
                return folded_total
        raise StorageError(f"the catalog manifest changed under {_CAS_ATTEMPTS} compactions in a row")

    def _manifest_versioned(self) -> tuple[pa.Table, str | None]:
        """The manifest's rows and the etag they were read at (None: no manifest yet)."""
        try:
            data, etag = self._store.get_versioned(self._bucket, self._key)
        except ObjectNotFoundError:
            return CATALOG_SCHEMA.empty_table(), None
        return conform(read_parquet(io.BytesIO(data)), CATALOG_SCHEMA, f"{self._bucket}/{self._key}"), etag

    def _update_keys(self, scene_id: str | None = None) -> list[str]:
        """Update object keys, oldest first within a scene (of one scene if given)."""
        prefix = catalog_updates_prefix(scene_id)
        return sorted(e.key for e in self._store.list(self._bucket, prefix) if e.key.endswith(UPDATE_SUFFIXES))

    def _updates(self, scene_id: str | None = None) -> tuple[list[str], list[dict]]:
        """The update objects' keys and the rows that count among them (of one scene if given)."""
        keys = self._update_keys(scene_id)
        return keys, self._read_updates(keys)

    def _read_updates(self, keys: list[str]) -> list[dict]:
        """The rows that count among the update ``keys``: each scene's newest update that is still there.

        An update is a whole row, so a scene's older updates (earlier keys: the stamp leads with the time) are
        superseded and never read; a newest one deleted since the listing falls back to the one before it.
        """
        newest: dict[str, list[str]] = {}
        for key in keys:  # sorted: each scene's keys together, oldest first
            newest.setdefault(key.split("/")[-2], []).append(key)
        candidates = list(newest.values())
        chunks = [candidates[i:i + _CHUNK] for i in range(0, len(candidates), _CHUNK)]
        with ThreadPoolExecutor(max_workers=self._store.concurrency) as pool:
            read = pool.map(lambda part: [row for scene in part for row in self._read_newest(scene)], chunks)
            return [row for rows in read for row in rows]

    def _read_newest(self, scene_keys: list[str]) -> list[dict]:
        """The rows of the newest of one scene's update keys that can still be read (none if all were folded)."""
        for key in reversed(scene_keys):
            rows = self._read(key)
            if rows is not None:
                return rows
        return []

    def _read(self, key: str) -> list[dict] | None:
        try:
            if key.endswith(".json"):
                return [_update_row(self._store.get_bytes(self._bucket, key), f"{self._bucket}/{key}")]
            table = self._store.read_table(self._bucket, key)  # written by earlier versions
        except ObjectNotFoundError:  # an update folded and deleted since it was listed
            return None
        return conform(table, CATALOG_SCHEMA, f"{self._bucket}/{key}").to_pylist()

    def _write(self, table: pa.Table, folded: list[str], etag: str | None) -> bool:
        """The manifest ``table`` (sorted by scene id) if it is still at ``etag``, then the update objects it now
        contains are deleted; False (nothing written or deleted) if another writer replaced it first."""
        buffer = io.BytesIO()
        pq.write_table(table.sort_by("scene_id"), buffer, row_group_size=MANIFEST_ROW_GROUP)
        if not self._store.put_if_match(self._bucket, self._key, buffer.getvalue(), etag):
            return False
        self._store.delete_many(self._bucket, folded)
        return True


def _update_json(entry: SceneEntry) -> bytes:
    """A status change as a small JSON object: read back in microseconds, where a Parquet file takes a millisecond."""
    row = _catalog_row(entry)
    row.update(created_at=entry.created_at.isoformat(), updated_at=entry.updated_at.isoformat())
    return json.dumps(row, separators=(",", ":")).encode()


def _update_row(data: bytes, what: str) -> dict:
    """A status change object as a catalog row."""
    try:
        row = json.loads(data)
        row.update(created_at=datetime.fromisoformat(row["created_at"]), updated_at=datetime.fromisoformat(row["updated_at"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise PermanentError(f"{what} is not a catalog status change: {exc}") from exc
    if set(row) != set(CATALOG_SCHEMA.names):
        raise PermanentError(f"{what} is not a catalog status change: fields {sorted(row)}")
    return row


def entries_of(table: pa.Table) -> list[SceneEntry]:
    """Catalog rows as entries (validated): for the few rows a caller works with, never a whole large catalog."""
    return [SceneEntry(**row) for row in table.to_pylist()]


def _new_entry(item: InputObject, scene_ids: set[str], changed: Mapping[str, SceneEntry], now: datetime) -> SceneEntry:
    scene_id = scene_id_from_key(item.key)
    if scene_id in scene_ids:
        other = changed[scene_id].input_key if scene_id in changed else "a registered input"
        raise InvalidKeyError(f"inputs {item.key!r} and {other!r} map to one scene id")
    return SceneEntry(scene_id=scene_id, input_key=item.key, input_kind=item.kind, content_hash=item.content_hash,
                      status=SceneStatus.PENDING, attempts=0, error=None, created_at=now, updated_at=now,
                      input_version=item.version)


def _groups_holding(meta: pq.FileMetaData, scene_id: str) -> list[int]:
    """Row groups whose scene-id range may hold ``scene_id`` (all of them when statistics are missing)."""
    column = meta.schema.names.index("scene_id")
    groups = []
    for group in range(meta.num_row_groups):
        stats = meta.row_group(group).column(column).statistics
        if stats is None or not stats.has_min_max or stats.min <= scene_id <= stats.max:
            groups.append(group)
    return groups


def _overlay(manifest: pa.Table, updates: list[dict]) -> pa.Table:
    """``manifest`` with each update row applied (in order) where it is at least as new as the row it replaces."""
    if not updates:
        return manifest
    updated_ids = pa.array(sorted({row["scene_id"] for row in updates}), pa.string())
    replaced = pc.is_in(manifest["scene_id"], updated_ids)
    latest = {row["scene_id"]: row for row in manifest.filter(replaced).to_pylist()}
    for row in updates:
        known = latest.get(row["scene_id"])
        if known is None or row["updated_at"] >= known["updated_at"]:
            latest[row["scene_id"]] = row
    rows = pa.Table.from_pylist(list(latest.values()), schema=CATALOG_SCHEMA)
    return pa.concat_tables([manifest.filter(pc.invert(replaced)), rows]).sort_by("scene_id")


class StageRecords:
    """Stage records of scenes: one Parquet object per (scene, stage, trajectory) in the work bucket.

    Writing a record again replaces it, so re-running a stage never duplicates rows. Output keys
    are keys of the same bucket.
    """

    def __init__(self, store: ObjectStore, bucket: str) -> None:
        self._store = store
        self._bucket = bucket

    def write(self, record: StageRecord) -> str:
        """Store ``record`` (after its outputs are written); returns its key."""
        self._store.write_table(self._bucket, record.key, _records_table([record]))
        return record.key

    def read(self, scene_id: str, stage: str, trajectory: str | None = None) -> StageRecord | None:
        """The record, or None if the stage has not finished."""
        key = record_key(scene_id, stage, trajectory)
        try:
            table = self._store.read_table(self._bucket, key)
        except ObjectNotFoundError:
            return None
        rows = conform(table, STAGE_RECORD_SCHEMA, f"{self._bucket}/{key}").to_pylist()
        return _record_from_row(rows[0]) if rows else None

    def is_done(self, scene_id: str, stage: str, trajectory: str | None = None) -> bool:
        """True only if the record exists and every output it names exists."""
        record = self.read(scene_id, stage, trajectory)
        return record is not None and all(self._store.exists(self._bucket, key) for key in record.output_keys)

    def table(self, scene_id: str) -> pa.Table:
        """All records of a scene, in key order; an empty table if none."""
        listed = self._store.list(self._bucket, records_prefix(scene_id))
        keys = sorted(e.key for e in listed if e.key.endswith(".parquet"))
        tables = [conform(self._store.read_table(self._bucket, key), STAGE_RECORD_SCHEMA, f"{self._bucket}/{key}")
                  for key in keys]
        return pa.concat_tables(tables) if tables else STAGE_RECORD_SCHEMA.empty_table()

    def records(self, scene_id: str) -> list[StageRecord]:
        """All records of a scene as dataclasses."""
        return [_record_from_row(row) for row in self.table(scene_id).to_pylist()]
