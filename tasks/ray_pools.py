"""Ray actor pools that hold loaded backends: weights load once per actor, then serve many requests.

Pool sizes come from ``ray.cluster_resources()``: a backend that wants a GPU gets one actor per free GPU
where GPUs exist and CPU actors otherwise, so no request ever waits for a GPU that is not there.
Actors restart and retry in-flight calls when they die.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import ray

from worldstereo.config import RaySettings, Settings
from worldstereo.pipeline.backends import Backend, Resources
from worldstereo.pipeline.registry import backend_class, make_backend

log = logging.getLogger(__name__)
ACTOR_RESTARTS = 3
POOLS = 3  # depth, generator, reconstructor
CPUS_PER_CPU_ACTOR = 16
_lock = threading.Lock()
_pools: dict[tuple, BackendPool] = {}


def ensure_ray(settings: RaySettings) -> None:
    """Join the configured cluster, or start a local one sized to this machine (once per process)."""
    with _lock:
        if ray.is_initialized():
            return
        if settings.address:
            ray.init(address=settings.address, log_to_driver=False)
        else:
            ray.init(num_cpus=settings.num_cpus or os.cpu_count(), include_dashboard=False,
                     object_store_memory=settings.object_store_memory, log_to_driver=False)
        log.info("ray resources: %s", ray.cluster_resources())


@ray.remote
class BackendActor:
    """One backend instance, set up once in the actor's process."""

    def __init__(self, kind: str, name: str, settings: Settings) -> None:
        self.backend: Backend = make_backend(kind, name, settings)
        self.backend.setup()

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.backend, method)(*args)

    def pid(self) -> int:
        return os.getpid()


@dataclass(frozen=True)
class PoolPlan:
    """How many actors and what each asks of Ray."""

    size: int
    num_gpus: float
    num_cpus: float


def plan_pool(resources: Resources, cluster: dict[str, float], max_size: int | None = None) -> PoolPlan:
    """One actor per GPU (asking for the backend's GPU fraction) where GPUs exist, else CPU actors.

    CPU actors ask for a share of the cluster's CPUs small enough that the depth, generator and
    reconstructor pools always fit together; one actor per ``CPUS_PER_CPU_ACTOR`` CPUs.
    """
    gpus, cpus = cluster.get("GPU", 0.0), cluster.get("CPU", 1.0)
    if resources.gpus > 0 and gpus >= resources.gpus:
        size = max(1, int(gpus))
        plan = PoolPlan(size, min(resources.gpus, 1.0), min(resources.cpus, cpus / (POOLS * size)))
    else:
        size = max(1, int(cpus // CPUS_PER_CPU_ACTOR))
        plan = PoolPlan(size, 0.0, min(resources.cpus, cpus / (POOLS * size)))
    return plan if max_size is None else PoolPlan(min(plan.size, max_size), plan.num_gpus, plan.num_cpus)


class BackendPool:
    """Round-robin over actors that each hold the same backend."""

    def __init__(self, kind: str, name: str, settings: Settings, max_size: int | None = None) -> None:
        self.kind, self.name = kind, name
        self.plan = plan_pool(backend_class(kind, name).resources, ray.cluster_resources(), max_size)
        options = {"num_gpus": self.plan.num_gpus, "num_cpus": self.plan.num_cpus,
                   "max_restarts": ACTOR_RESTARTS, "max_task_retries": ACTOR_RESTARTS}
        self.actors = [BackendActor.options(**options).remote(kind, name, settings) for _ in range(self.plan.size)]
        self._next = itertools.cycle(range(self.plan.size))
        self._turn = threading.Lock()

    def call(self, method: str, *args: Any) -> Any:
        """Run ``backend.method(*args)`` on the next actor and wait for the result."""
        with self._turn:
            actor = self.actors[next(self._next)]
        return ray.get(actor.call.remote(method, *args))

    def method(self, method: str):
        """A plain callable for the library's stage functions."""
        return lambda *args: self.call(method, *args)


def get_pool(kind: str, name: str, settings: Settings, max_size: int | None = None) -> BackendPool:
    """The process-wide pool for a backend (created on first use)."""
    ensure_ray(settings.ray)
    # what a loaded backend depends on; scene-level settings (storage, trajectories) travel with requests
    key = (kind, name, settings.models.model_dump_json(), settings.generation.model_dump_json(), settings.device,
           max_size)
    with _lock:
        if key not in _pools:
            _pools[key] = BackendPool(kind, name, settings, max_size)
        return _pools[key]


def shutdown_pools() -> None:
    """Drop every pool (their actors exit with their handles)."""
    with _lock:
        for pool in _pools.values():
            for actor in pool.actors:
                ray.kill(actor)
        _pools.clear()
