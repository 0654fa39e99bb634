"""The configured object store."""

from __future__ import annotations

from worldstereo.config import StorageSettings
from worldstereo.errors import ConfigurationError
from worldstereo.storage.base import ObjectStore
from worldstereo.storage.local import LocalStore
from worldstereo.storage.s3 import S3Store


def open_store(settings: StorageSettings) -> ObjectStore:
    """``local``: a directory at ``settings.root``; ``s3``: the server at ``settings.endpoint``."""
    match settings.backend:
        case "local":
            return LocalStore(settings.root)
        case "s3":
            return S3Store(settings)
    raise ConfigurationError(f"unknown storage backend {settings.backend!r}")
