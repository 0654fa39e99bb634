"""Per-scene claims: which batch runs a scene now, decided by conditional writes that only one writer wins.

A claim is a small JSON object (``catalog/claims/{scene_id}.json``: owner and expiry), deleted when released, so
the claims left in a bucket are those of scenes running now. Taking it is a create-if-absent, or, when it has
expired, a replace-if-unchanged against the version that was read; renewing is a replace-if-unchanged too. So
of two batches that try to take the same scene at once exactly one wins, and a batch that crashed holds its
scenes at most ``ttl_s``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from worldstereo.storage.base import ObjectNotFoundError, ObjectStore
from worldstereo.storage.keys import claim_key


@dataclass(frozen=True)
class Claim:
    """A held claim: the etag of the object this owner last wrote (the version it may replace)."""

    scene_id: str
    etag: str


class SceneClaims:
    """Claims of one owner (a batch run) in a work bucket."""

    def __init__(self, store: ObjectStore, bucket: str, ttl_s: float, owner: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._store, self._bucket, self.ttl_s = store, bucket, ttl_s
        self.owner = owner or uuid.uuid4().hex
        self._clock = clock

    def _body(self, expires: float) -> bytes:
        return json.dumps({"owner": self.owner, "expires": expires}).encode()

    def _write(self, scene_id: str, etag: str | None, expires: float) -> Claim | None:
        key, body = claim_key(scene_id), self._body(expires)
        if not self._store.put_if_match(self._bucket, key, body, etag):
            return None
        data, written = self._store.get_versioned(self._bucket, key)  # the version to replace next time
        return Claim(scene_id, written) if data == body else None

    def take(self, scene_id: str) -> Claim | None:
        """The scene's claim if no other owner holds it unexpired; None if another owner does or won the race."""
        try:
            data, etag = self._store.get_versioned(self._bucket, claim_key(scene_id))
        except ObjectNotFoundError:
            return self._write(scene_id, None, self._clock() + self.ttl_s)
        held = json.loads(data)
        if held["owner"] != self.owner and held["expires"] > self._clock():
            return None
        return self._write(scene_id, etag, self._clock() + self.ttl_s)

    def renew(self, claim: Claim) -> Claim | None:
        """The claim with a new expiry; None if it was lost (it expired and another owner took it).

        If the version changed under this owner (a renewal whose reply was lost wrote it), it is taken again.
        """
        return self._write(claim.scene_id, claim.etag, self._clock() + self.ttl_s) or self.take(claim.scene_id)

    def release(self, claim: Claim) -> bool:
        """Give the scene up: its claim object is deleted if it is still this owner's version; False if the claim
        had already been lost. (Another owner taking the scene between the check and the delete loses its claim
        object; its next renewal takes the then-absent claim again.)"""
        try:
            _, etag = self._store.get_versioned(self._bucket, claim_key(claim.scene_id))
        except ObjectNotFoundError:
            return False
        if etag != claim.etag:
            return False
        self._store.delete(self._bucket, claim_key(claim.scene_id))
        return True
