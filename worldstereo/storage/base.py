"""The object-store interface every backend implements, with keys and buckets validated once, here."""

from __future__ import annotations

import os
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from worldstereo.errors import ConfigurationError, PermanentError, StorageError
from worldstereo.storage.keys import PARTIAL_SUFFIX, validate_bucket, validate_key, validate_prefix


class ObjectNotFoundError(PermanentError, FileNotFoundError):
    """The object (or its bucket) does not exist."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What ``stat`` reports. ``etag`` changes whenever the content does (MD5 hex for single-part writes)."""

    key: str
    size: int
    etag: str
    modified: datetime


@dataclass(frozen=True, slots=True)
class ObjectEntry:
    """One listing entry: an object, or (non-recursive listings only) a common prefix ending in ``/``.

    ``version`` changes whenever the object's content does, so a listing tells which objects changed
    without reading them (S3: the ETag; local: size, modification time and inode, every write making
    a new file). Empty for prefixes.
    """

    key: str
    size: int
    is_prefix: bool = False
    version: str = ""


@contextmanager
def staged_file(target: Path) -> Iterator[Path]:
    """A fresh ``*.partial`` file next to ``target`` (created O_CREAT|O_EXCL); removed unless moved away.

    Fill it, then ``os.replace`` it onto ``target``: readers see the old file or the whole new one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=PARTIAL_SUFFIX)
    os.fchmod(fd, 0o644)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


RowGroups = Callable[[pq.FileMetaData], Sequence[int]]


def read_parquet(source: Path | pa.NativeFile | BinaryIO, columns: list[str] | None = None,
                 row_groups: RowGroups | None = None) -> pa.Table:
    """One Parquet file as a table (``pq.read_table`` would go through ``pyarrow.dataset``, whose import takes
    a process a tenth of a second, of no use for one file); ``row_groups(metadata)`` picks the row groups to read."""
    with pq.ParquetFile(source) as parquet:
        if row_groups is None:
            return parquet.read(columns=columns)
        return parquet.read_row_groups(list(row_groups(parquet.metadata)), columns=columns)


class ObjectStore(ABC):
    """Buckets of objects addressed by ``/``-separated keys.

    Public methods validate the bucket and key, create buckets on first write, and delegate to the
    backend's ``_``-methods. Reads of a missing object or bucket raise ``ObjectNotFoundError``, keys
    a backend cannot hold raise ``InvalidKeyError``, and other backend failures ``StorageError``.
    """

    concurrency = 16
    """Requests worth having in flight at once for many small reads: a server hides its latency behind them."""

    def __init__(self) -> None:
        self._ready_buckets: set[str] = set()

    @property
    @abstractmethod
    def server(self) -> str:
        """Where the objects live, for messages (no credentials)."""

    def require_conditional_writes(self, bucket: str) -> None:
        """Raise ``ConfigurationError`` naming the server unless it honours ``put_if_absent`` and ``put_if_match``.

        Claims and the catalog's compare-and-swap rest on them; a server that rejects or ignores the
        conditions would let two batches run one scene. Probes with one small object in ``bucket``.
        """
        key = f"probes/conditional-writes/{uuid.uuid4().hex}"
        missing = f"{self.server} does not support conditional writes (PUT with If-None-Match: * and If-Match)"
        try:
            created = self.put_if_absent(bucket, key, b"1")
            _, etag = self.get_versioned(bucket, key)
            honoured = created and not self.put_if_absent(bucket, key, b"2")
            honoured = honoured and not self.put_if_match(bucket, key, b"3", f"{etag}0")
            honoured = honoured and self.put_if_match(bucket, key, b"4", etag)
        except StorageError as exc:
            raise ConfigurationError(f"{missing}: {exc}") from exc
        finally:
            self.delete(bucket, key)
        if not honoured:
            raise ConfigurationError(f"{missing}: it ignores the conditions")

    # --- buckets ------------------------------------------------------------------------------
    def ensure_bucket(self, bucket: str) -> None:
        """Create ``bucket`` unless it exists."""
        validate_bucket(bucket)
        if bucket not in self._ready_buckets:
            self._ensure_bucket(bucket)
            self._ready_buckets.add(bucket)

    def _writable(self, bucket: str, key: str) -> None:
        validate_key(key)
        self.ensure_bucket(bucket)

    @staticmethod
    def _readable(bucket: str, key: str) -> None:
        validate_bucket(bucket)
        validate_key(key)

    # --- objects ------------------------------------------------------------------------------
    def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        """Write (or replace) an object atomically: readers see the old or the new content."""
        self._writable(bucket, key)
        self._put_bytes(bucket, key, bytes(data))

    def put_file(self, bucket: str, key: str, path: str | Path) -> None:
        """Upload a local file as an object."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no local file {path} to upload")
        self._writable(bucket, key)
        self._put_file(bucket, key, path)

    def copy(self, bucket: str, source: str, key: str) -> None:
        """Write (or replace) ``key`` with the content of object ``source`` in the same bucket, without moving the
        bytes through this process: a hard link on a directory, a server-side copy on S3."""
        self._readable(bucket, source)
        self._writable(bucket, key)
        if source != key:
            self._copy(bucket, source, key)
        elif not self.exists(bucket, source):  # a copy onto itself changes nothing (S3 refuses one)
            raise ObjectNotFoundError(f"no object {bucket}/{source}")

    def put_if_absent(self, bucket: str, key: str, data: bytes) -> bool:
        """Create the object only if no object has that key. True if this call created it."""
        self._writable(bucket, key)
        return self._put_if_absent(bucket, key, bytes(data))

    def put_if_match(self, bucket: str, key: str, data: bytes, etag: str | None) -> bool:
        """Replace the object only if its etag is still ``etag`` (``None``: only if there is none).

        True if this call wrote it; a compare-and-swap for small objects that several writers share.
        """
        if etag is None:
            return self.put_if_absent(bucket, key, data)
        self._writable(bucket, key)
        return self._put_if_match(bucket, key, bytes(data), etag)

    def get_versioned(self, bucket: str, key: str) -> tuple[bytes, str]:
        """The whole content of an object and its etag (to pass to :meth:`put_if_match`)."""
        self._readable(bucket, key)
        return self._get_versioned(bucket, key)

    def get_bytes(self, bucket: str, key: str) -> bytes:
        """The whole content of an object."""
        self._readable(bucket, key)
        return self._get_bytes(bucket, key)

    def get_file(self, bucket: str, key: str, path: str | Path) -> Path:
        """Download an object to ``path`` (parents created, written atomically); returns ``path``."""
        self._readable(bucket, key)
        path = Path(path)
        with staged_file(path) as temp:
            self._download(bucket, key, temp)
            os.replace(temp, path)
        return path

    def exists(self, bucket: str, key: str) -> bool:
        """Whether an object has this key."""
        self._readable(bucket, key)
        return self._exists(bucket, key)

    def stat(self, bucket: str, key: str) -> ObjectInfo:
        """Size, etag and modification time of an object."""
        self._readable(bucket, key)
        return self._stat(bucket, key)

    def list(self, bucket: str, prefix: str = "", recursive: bool = True) -> Iterator[ObjectEntry]:
        """Objects whose key starts with ``prefix``, in no order callers may rely on (the local store and most
        S3 servers list in UTF-8 key order, SeaweedFS in directory order).

        Non-recursive listings stop at the next ``/`` after the prefix and report each deeper level
        once, as an entry with ``is_prefix=True``; a level whose objects were all deleted may still be
        reported (SeaweedFS keeps emptied folders for a while). A missing bucket lists nothing.
        """
        validate_bucket(bucket)
        validate_prefix(prefix)
        return self._list(bucket, prefix, recursive)

    def delete(self, bucket: str, key: str) -> None:
        """Remove an object; removing a missing object is not an error."""
        self._readable(bucket, key)
        self._delete(bucket, key)

    def delete_many(self, bucket: str, keys: Sequence[str]) -> None:
        """Remove objects (missing ones are not an error), in as few requests as the backend allows."""
        validate_bucket(bucket)
        keys = [validate_key(key) for key in keys]
        if keys:
            self._delete_many(bucket, keys)

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        """Remove every object under ``prefix``; returns how many were removed."""
        keys = [entry.key for entry in self.list(bucket, prefix, recursive=True)]
        if keys:
            self._delete_many(bucket, keys)
        return len(keys)

    # --- Parquet ------------------------------------------------------------------------------
    def read_table(self, bucket: str, key: str, columns: Sequence[str] | None = None,
                   row_groups: RowGroups | None = None) -> pa.Table:
        """Read a Parquet object, optionally only some columns and the row groups ``row_groups(metadata)`` picks
        (a ranged read on S3)."""
        self._readable(bucket, key)
        return self._read_table(bucket, key, None if columns is None else list(columns), row_groups)

    def write_table(self, bucket: str, key: str, table: pa.Table) -> None:
        """Write a table as one Parquet object, atomically."""
        self._writable(bucket, key)
        self._write_table(bucket, key, table)

    # --- backend hooks (arguments already validated) ------------------------------------------
    @abstractmethod
    def _ensure_bucket(self, bucket: str) -> None: ...

    @abstractmethod
    def _put_bytes(self, bucket: str, key: str, data: bytes) -> None: ...

    @abstractmethod
    def _put_file(self, bucket: str, key: str, path: Path) -> None: ...

    @abstractmethod
    def _copy(self, bucket: str, source: str, key: str) -> None: ...

    @abstractmethod
    def _put_if_absent(self, bucket: str, key: str, data: bytes) -> bool: ...

    @abstractmethod
    def _put_if_match(self, bucket: str, key: str, data: bytes, etag: str) -> bool: ...

    @abstractmethod
    def _get_versioned(self, bucket: str, key: str) -> tuple[bytes, str]: ...

    @abstractmethod
    def _get_bytes(self, bucket: str, key: str) -> bytes: ...

    @abstractmethod
    def _download(self, bucket: str, key: str, path: Path) -> None: ...

    @abstractmethod
    def _exists(self, bucket: str, key: str) -> bool: ...

    @abstractmethod
    def _stat(self, bucket: str, key: str) -> ObjectInfo: ...

    @abstractmethod
    def _list(self, bucket: str, prefix: str, recursive: bool) -> Iterator[ObjectEntry]: ...

    @abstractmethod
    def _delete(self, bucket: str, key: str) -> None: ...

    @abstractmethod
    def _delete_many(self, bucket: str, keys: list[str]) -> None: ...

    @abstractmethod
    def _read_table(self, bucket: str, key: str, columns: list[str] | None, row_groups: RowGroups | None
                    ) -> pa.Table: ...

    @abstractmethod
    def _write_table(self, bucket: str, key: str, table: pa.Table) -> None: ...
