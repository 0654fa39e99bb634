"""Object transport: a local directory or any S3-compatible server (work-bucket bookkeeping: ``worldstereo.catalog``)."""

from worldstereo.storage.base import ObjectEntry, ObjectInfo, ObjectNotFoundError, ObjectStore
from worldstereo.storage.factory import open_store
from worldstereo.storage.local import LocalStore
from worldstereo.storage.s3 import S3Store

__all__ = ["LocalStore", "ObjectEntry", "ObjectInfo", "ObjectNotFoundError", "ObjectStore", "S3Store", "open_store"]
