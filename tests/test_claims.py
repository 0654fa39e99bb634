"""Per-scene claims on both stores: of writers racing for a scene exactly one wins; expiry, renewal, release."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from worldstereo.storage import ObjectStore
from worldstereo.storage.keys import claim_key
from worldstereo.catalog.claims import SceneClaims

SCENE = "room-0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_of_racing_owners_exactly_one_wins(store: ObjectStore, storage_settings) -> None:
    bucket = storage_settings.work_bucket
    owners = [SceneClaims(store, bucket, ttl_s=60, owner=f"batch{i}") for i in range(8)]
    for round_ in range(3):
        scene = f"scene{round_}-0123456789"
        with ThreadPoolExecutor(8) as pool:
            claims = list(pool.map(lambda owner: owner.take(scene), owners))
        assert sum(claim is not None for claim in claims) == 1


def test_expiry_renewal_and_release(store: ObjectStore, storage_settings) -> None:
    bucket, clock = storage_settings.work_bucket, Clock()
    first, second = (SceneClaims(store, bucket, ttl_s=60, owner=name, clock=clock) for name in ("a", "b"))
    held = first.take(SCENE)
    assert held is not None and second.take(SCENE) is None
    clock.now += 50
    held = first.renew(held)
    assert held is not None
    clock.now += 50
    assert second.take(SCENE) is None  # renewed 50 s ago: not expired
    clock.now += 20
    taken = second.take(SCENE)
    assert taken is not None  # expired: the other owner takes it
    assert first.renew(held) is None and not first.release(held)  # the first owner learns that it lost
    assert second.release(taken)
    assert not store.exists(bucket, claim_key(SCENE))  # a released claim leaves nothing behind
    assert first.take(SCENE) is not None  # released: free at once
