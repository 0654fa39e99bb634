"""Any S3-compatible server: objects through the ``minio`` SDK, Parquet through ``pyarrow.fs.S3FileSystem``."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error

from worldstereo.config import StorageSettings
from worldstereo.errors import ConfigurationError, StorageError
from worldstereo.storage.base import (
    ObjectEntry,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStore,
    RowGroups,
    read_parquet,
)


_MISSING = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"})
_FAILURES = (MinioException, urllib3.exceptions.HTTPError, OSError)
_CHUNK = 1024 * 1024


# how pyarrow's S3 filesystem reports an object that is not there (deleted between a listing and its read)
_ARROW_MISSING = re.compile(r"NO_SUCH_KEY|RESOURCE_NOT_FOUND")


class S3Store(ObjectStore):
    """Buckets on an S3-compatible server (AWS S3, MinIO, Ceph RGW, SeaweedFS, Garage, ...).

    Objects larger than ``settings.multipart_part_size`` upload in parts of that size. Credentials
    are read from the settings' ``SecretStr`` fields and appear in no repr, message or log. Pickling
    a store carries its settings and rebuilds the clients.
    """

    def __init__(self, settings: StorageSettings) -> None:
        super().__init__()
        self._settings = settings
        self._part_size = settings.multipart_part_size
        access = settings.access_key.get_secret_value() or None
        secret = settings.secret_key.get_secret_value() or None
        try:
            self._client = Minio(
                settings.endpoint,
                access_key=access,
                secret_key=secret,
                secure=settings.secure,
                region=settings.region,
            )
        except ValueError:
            raise ConfigurationError(
                f"invalid S3 endpoint {settings.endpoint!r}: expected host[:port] without scheme or path"
            ) from None
        credentials = {"access_key": access, "secret_key": secret} if access else {"anonymous": True}
        self._arrow = pafs.S3FileSystem(
            **credentials,
            endpoint_override=settings.endpoint,
            scheme="https" if settings.secure else "http",
            region=settings.region,
        )

    def __repr__(self) -> str:
        return f"S3Store(endpoint={self._settings.endpoint!r}, secure={self._settings.secure})"

    @property
    def server(self) -> str:
        scheme = "https" if self._settings.secure else "http"
        return f"the S3 server {scheme}://{self._settings.endpoint}"

    def __reduce__(self) -> tuple[type[S3Store], tuple[StorageSettings]]:
        return (type(self), (self._settings,))

    def _error(self, exc: Exception, action: str, target: str) -> Exception:
        """The store's typed error for an SDK or transport failure."""
        if isinstance(exc, S3Error):
            if exc.code in _MISSING:
                return ObjectNotFoundError(f"no object {target} ({exc.code})")
            return StorageError(f"cannot {action} {target}: {exc.code}: {exc.message}")
        if isinstance(exc, FileNotFoundError) or (isinstance(exc, OSError) and _ARROW_MISSING.search(str(exc))):
            return ObjectNotFoundError(f"no object {target}")  # the second: deleted between listing and read
        return StorageError(f"cannot {action} {target} on {self._settings.endpoint}: {type(exc).__name__}: {exc}")

    @contextmanager
    def _errors(self, action: str, bucket: str, key: str = "") -> Iterator[None]:
        try:
            yield
        except _FAILURES as exc:
            raise self._error(exc, action, f"{bucket}/{key}") from exc

    def _ensure_bucket(self, bucket: str) -> None:
        with self._errors("create bucket", bucket):
            if self._client.bucket_exists(bucket):
                return
            try:
                self._client.make_bucket(bucket)
            except S3Error as exc:
                if exc.code != "BucketAlreadyOwnedByYou":
                    raise

    def _put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        with self._errors("write", bucket, key):
            self._client.put_object(bucket, key, io.BytesIO(data), len(data), part_size=self._part_size)

    def _put_file(self, bucket: str, key: str, path: Path) -> None:
        with self._errors("upload", bucket, key):
            self._client.fput_object(bucket, key, str(path), part_size=self._part_size)

    def _copy(self, bucket: str, source: str, key: str) -> None:
        with self._errors("copy", bucket, source):  # a missing source is the likely failure
            self._client.copy_object(bucket, key, CopySource(bucket, source))

    def _put_if_absent(self, bucket: str, key: str, data: bytes) -> bool:
        """One conditional PUT with ``If-None-Match: *``: the server refuses it (412) if the key exists.

        minio-py's public ``put_object`` turns extra headers into user metadata, so the request goes
        through its signed single-request ``_put_object`` (minio is pinned). A server without conditional
        writes answers with an error (:meth:`ObjectStore.require_conditional_writes` tells it at start).
        Meant for small objects (a single request, < 5 GiB).
        """
        return self._conditional_put(bucket, key, data, {"If-None-Match": "*"}, "create")

    def _put_if_match(self, bucket: str, key: str, data: bytes, etag: str) -> bool:
        """One conditional PUT with ``If-Match``: the server refuses it (412) if the etag changed."""
        return self._conditional_put(bucket, key, data, {"If-Match": f'"{etag}"'}, "replace")

    def _conditional_put(self, bucket: str, key: str, data: bytes, condition: dict[str, str], action: str) -> bool:
        """False when the server refuses the condition (412; ``NoSuchKey`` for ``If-Match`` on a missing key)."""
        headers = {"Content-Type": "application/octet-stream", **condition}
        try:
            self._client._put_object(bucket, key, data, headers=headers)
            return True
        except S3Error as exc:
            if exc.code in ("PreconditionFailed", "NoSuchKey"):
                return False
            raise self._error(exc, action, f"{bucket}/{key}") from exc
        except _FAILURES as exc:
            raise self._error(exc, action, f"{bucket}/{key}") from exc

    def _get_versioned(self, bucket: str, key: str) -> tuple[bytes, str]:
        with self._response(bucket, key) as response:
            return response.read(), (response.headers.get("ETag") or "").strip('"')

    @contextmanager
    def _response(self, bucket: str, key: str) -> Iterator[urllib3.BaseHTTPResponse]:
        with self._errors("read", bucket, key):
            response = self._client.get_object(bucket, key)
            try:
                yield response
            finally:
                response.close()
                response.release_conn()

    def _get_bytes(self, bucket: str, key: str) -> bytes:
        with self._response(bucket, key) as response:
            return response.read()

    def _download(self, bucket: str, key: str, path: Path) -> None:
        with self._response(bucket, key) as response, path.open("wb") as out:
            for chunk in response.stream(_CHUNK):
                out.write(chunk)

    def _exists(self, bucket: str, key: str) -> bool:
        try:
            self._stat(bucket, key)
        except ObjectNotFoundError:
            return False
        return True

    def _stat(self, bucket: str, key: str) -> ObjectInfo:
        with self._errors("stat", bucket, key):
            obj = self._client.stat_object(bucket, key)
        return ObjectInfo(key=key, size=obj.size or 0, etag=obj.etag or "", modified=obj.last_modified)

    def _list(self, bucket: str, prefix: str, recursive: bool) -> Iterator[ObjectEntry]:
        try:
            with self._errors("list", bucket, prefix):
                for obj in self._client.list_objects(bucket, prefix=prefix or None, recursive=recursive):
                    yield ObjectEntry(key=obj.object_name, size=obj.size or 0, is_prefix=obj.is_dir, version=obj.etag or "")
        except ObjectNotFoundError:
            return

    def _delete(self, bucket: str, key: str) -> None:
        try:
            with self._errors("delete", bucket, key):
                self._client.remove_object(bucket, key)
        except ObjectNotFoundError:
            return

    def _delete_many(self, bucket: str, keys: list[str]) -> None:
        with self._errors("delete objects in", bucket):
            failures = list(self._client.remove_objects(bucket, (DeleteObject(key) for key in keys)))
        if failures:
            first = failures[0]
            raise StorageError(
                f"cannot delete {len(failures)} of {len(keys)} objects in {bucket}, "
                f"e.g. {first.name}: {first.code}: {first.message}"
            )

    def _read_table(self, bucket: str, key: str, columns: list[str] | None, row_groups: RowGroups | None
                    ) -> pa.Table:
        with self._errors("read", bucket, key):
            with self._arrow.open_input_file(f"{bucket}/{key}") as source:
                return read_parquet(source, columns, row_groups)

    def _write_table(self, bucket: str, key: str, table: pa.Table) -> None:
        """The object appears only when the upload completes (S3 PUTs are atomic)."""
        with self._errors("write", bucket, key):
            pq.write_table(table, f"{bucket}/{key}", filesystem=self._arrow)
