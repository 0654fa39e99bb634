"""A directory as an object store: ``{root}/{bucket}/{key}``, every write atomic."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from worldstereo.errors import InvalidKeyError, StorageError
from worldstereo.storage.base import (
    ObjectEntry,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStore,
    RowGroups,
    read_parquet,
    staged_file,
)
from worldstereo.storage.keys import PARTIAL_SUFFIX



def _sort_key(entry: os.DirEntry[str]) -> bytes:
    """Directories sort as ``name/`` so that a depth-first walk yields keys in UTF-8 order."""
    suffix = "/" if entry.is_dir(follow_symlinks=False) else ""
    return (entry.name + suffix).encode("utf-8")


class LocalStore(ObjectStore):
    """Objects as files under ``root``; a bucket is a subdirectory.

    Writes go to a ``*.partial`` temporary file in the target directory, then ``os.replace``;
    listings skip those files (keys may not use that suffix). A key cannot name both an object and
    a deeper level (``a`` and ``a/b``): the second write raises ``InvalidKeyError``.
    """

    concurrency = 1  # small-file reads are Python-bound: threads only contend for the interpreter

    def __init__(self, root: str | Path) -> None:
        super().__init__()
        self._root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"LocalStore(root={str(self._root)!r})"

    @property
    def server(self) -> str:
        return f"the local store {self._root}"

    @property
    def root(self) -> Path:
        """The directory holding the buckets."""
        return self._root

    def _path(self, bucket: str, key: str) -> Path:
        return self._root / bucket / key

    @contextmanager
    def _errors(self, action: str, bucket: str, key: str, *, writing: bool = False) -> Iterator[None]:
        """Translate filesystem errors into the store's typed errors.

        A vanished file means a missing object when reading; when writing it means a directory was
        pruned by a concurrent delete, which a retry fixes.
        """
        target = f"{bucket}/{key}"
        try:
            yield
        except (NotADirectoryError, IsADirectoryError, FileExistsError) as exc:
            raise InvalidKeyError(
                f"cannot {action} {target}: the key collides with an object or level of the local store"
            ) from exc
        except FileNotFoundError as exc:
            if writing:
                raise StorageError(f"cannot {action} {target}: its directory vanished during the write") from exc
            raise ObjectNotFoundError(f"no object {target}") from exc
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise InvalidKeyError(f"cannot {action} {target}: a segment is too long for the filesystem") from exc
            raise StorageError(f"cannot {action} {target}: {exc.strerror or exc}") from exc

    def _write(self, bucket: str, key: str, fill: Callable[[Path], None]) -> None:
        target = self._path(bucket, key)
        with self._errors("write", bucket, key, writing=True), staged_file(target) as temp:
            fill(temp)
            _fsync(temp)
            os.replace(temp, target)

    def _ensure_bucket(self, bucket: str) -> None:
        (self._root / bucket).mkdir(parents=True, exist_ok=True)

    def _put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        self._write(bucket, key, lambda temp: temp.write_bytes(data))

    def _put_file(self, bucket: str, key: str, path: Path) -> None:
        self._write(bucket, key, lambda temp: shutil.copyfile(path, temp))

    def _copy(self, bucket: str, source: str, key: str) -> None:
        """A hard link, published like a write: no write changes a file in place, so the two keys stay independent."""
        origin = self._file(bucket, source)
        target = self._path(bucket, key)
        with self._errors("copy", bucket, key, writing=True), staged_file(target) as temp:
            temp.unlink()
            os.link(origin, temp)
            os.replace(temp, target)

    def _put_if_absent(self, bucket: str, key: str, data: bytes) -> bool:
        """Publish with ``os.link``, which (unlike rename) fails when the target exists: atomic create-once."""
        target = self._path(bucket, key)
        with self._errors("create", bucket, key, writing=True), staged_file(target) as temp:
            temp.write_bytes(data)
            _fsync(temp)
            try:
                os.link(temp, target)
            except FileExistsError:
                if target.is_dir():
                    raise
                return False
        return True

    def _put_if_match(self, bucket: str, key: str, data: bytes, etag: str) -> bool:
        """Compare and replace under an exclusive lock on the key (writers on this machine serialise)."""
        lock = self._root / ".locks" / bucket / f"{key}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with lock.open("a") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            try:
                current = self._file(bucket, key)
            except ObjectNotFoundError:
                return False
            with current.open("rb") as stream:
                if _md5(stream) != etag:
                    return False
            self._put_bytes(bucket, key, data)
            return True

    def _get_versioned(self, bucket: str, key: str) -> tuple[bytes, str]:
        data = self._get_bytes(bucket, key)
        return data, hashlib.md5(data).hexdigest()

    def _get_bytes(self, bucket: str, key: str) -> bytes:
        with self._errors("read", bucket, key):
            return self._file(bucket, key).read_bytes()

    def _download(self, bucket: str, key: str, path: Path) -> None:
        source = self._file(bucket, key)
        with self._errors("download", bucket, key):
            shutil.copyfile(source, path)

    def _file(self, bucket: str, key: str) -> Path:
        path = self._path(bucket, key)
        if not path.is_file():
            raise ObjectNotFoundError(f"no object {bucket}/{key}")
        return path

    def _exists(self, bucket: str, key: str) -> bool:
        return self._path(bucket, key).is_file()

    def _stat(self, bucket: str, key: str) -> ObjectInfo:
        path = self._file(bucket, key)
        with self._errors("stat", bucket, key), path.open("rb") as stream:
            info = os.fstat(stream.fileno())
            etag = _md5(stream)
        modified = datetime.fromtimestamp(info.st_mtime, tz=UTC)
        return ObjectInfo(key=key, size=info.st_size, etag=etag, modified=modified)

    def _list(self, bucket: str, prefix: str, recursive: bool) -> Iterator[ObjectEntry]:
        directory, _, start = prefix.rpartition("/")
        base = self._root / bucket / directory
        key_prefix = f"{directory}/" if directory else ""
        yield from self._walk(base, key_prefix, start, recursive)

    def _walk(self, directory: Path, key_prefix: str, start: str, recursive: bool) -> Iterator[ObjectEntry]:
        """Entries of ``directory`` whose name starts with ``start``, depth-first in key order."""
        try:
            entries = sorted(os.scandir(directory), key=_sort_key)
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if not entry.name.startswith(start) or entry.name.endswith(PARTIAL_SUFFIX):
                continue
            key = key_prefix + entry.name
            if entry.is_file(follow_symlinks=False):
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # deleted since the directory was read: no longer listed
                    continue
                yield ObjectEntry(key=key, size=info.st_size, version=f"{info.st_size:x}-{info.st_mtime_ns:x}-{info.st_ino:x}")
            elif entry.is_dir(follow_symlinks=False):
                below = self._walk(Path(entry.path), f"{key}/", "", True)
                if recursive:
                    yield from below
                elif next(below, None) is not None:
                    yield ObjectEntry(key=f"{key}/", size=0, is_prefix=True)

    def _delete(self, bucket: str, key: str) -> None:
        if self._unlink(bucket, key):
            self._prune(self._path(bucket, key).parent, self._root / bucket)

    def _unlink(self, bucket: str, key: str) -> bool:
        """Remove the object's file; False if there was none."""
        path = self._path(bucket, key)
        if not path.is_file():
            return False
        with self._errors("delete", bucket, key):
            path.unlink(missing_ok=True)
        return True

    def _delete_many(self, bucket: str, keys: list[str]) -> None:
        """The files, then each emptied directory once (in one thread: unlinks and rmdirs queue in the file
        system, which threads only slow down)."""
        base = self._root / bucket
        emptied = set()
        for key in keys:
            with self._errors("delete", bucket, key):
                try:
                    os.unlink(f"{base}/{key}")
                except (FileNotFoundError, IsADirectoryError):  # no such object
                    continue
            emptied.add(key.rpartition("/")[0])
        for directory in emptied:
            self._prune(base / directory, base)

    @staticmethod
    def _prune(directory: Path, stop: Path) -> None:
        """Remove now-empty directories from ``directory`` up to (not including) ``stop``."""
        while directory != stop and stop in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def _read_table(self, bucket: str, key: str, columns: list[str] | None, row_groups: RowGroups | None
                    ) -> pa.Table:
        path = self._file(bucket, key)
        with self._errors("read", bucket, key):
            return read_parquet(path, columns, row_groups)

    def _write_table(self, bucket: str, key: str, table: pa.Table) -> None:
        self._write(bucket, key, lambda temp: pq.write_table(table, temp))


def _md5(stream: BinaryIO) -> str:
    """MD5 hex of a whole stream: the ETag S3 reports for single-part objects."""
    return hashlib.file_digest(stream, "md5").hexdigest()


def _fsync(path: Path) -> None:
    """Flush a file's content to disk before it is published under its key."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
