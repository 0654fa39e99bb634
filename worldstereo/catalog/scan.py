"""Finding an input bucket's new and changed images without reading the unchanged ones."""

from __future__ import annotations

import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from worldstereo.inputs import is_input_image, sidecar_keys
from worldstereo.storage.base import ObjectEntry, ObjectNotFoundError, ObjectStore
from worldstereo.catalog.manifests import InputObject, content_hash
from worldstereo.catalog.schemas import InputKind


@dataclass(frozen=True, slots=True)
class InputScan:
    """``inputs``: the images that were read and hashed; ``listed``: every image under the prefix."""

    inputs: list[InputObject]
    listed: int


def scan_inputs(store: ObjectStore, bucket: str, prefix: str, known: Mapping[str, str | None]) -> InputScan:
    """List images under ``prefix``; read and hash those whose listed version differs from ``known[key]``.

    ``known`` maps registered input keys to the version recorded when they were last hashed, so a
    bucket of already registered, unchanged images costs one listing and no reads. The reads run on
    the store's ``concurrency`` threads.
    """
    changed: list[ObjectEntry] = []
    listed = 0
    for entry in sorted(store.list(bucket, prefix), key=lambda e: e.key):  # servers list in different orders
        if entry.is_prefix or not is_input_image(entry.key):
            continue
        listed += 1
        if entry.key not in known or known[entry.key] != entry.version:
            changed.append(entry)

    def read(entry: ObjectEntry) -> InputObject:
        digest = content_hash(store.get_bytes(bucket, entry.key))
        return InputObject(entry.key, input_kind(store, bucket, entry.key), digest, entry.version)

    with ThreadPoolExecutor(max_workers=store.concurrency) as pool:
        return InputScan(list(pool.map(read, changed)), listed)


def input_kind(store: ObjectStore, bucket: str, image_key: str) -> InputKind:
    """Panorama when the image's camera file says so; otherwise (no or unreadable file) perspective."""
    try:
        document = json.loads(store.get_bytes(bucket, sidecar_keys(image_key)[1]))
    except (ObjectNotFoundError, ValueError):
        return InputKind.PERSPECTIVE
    is_panorama = isinstance(document, dict) and document.get("kind") == InputKind.PANORAMA
    return InputKind.PANORAMA if is_panorama else InputKind.PERSPECTIVE
