"""Ray actor pools that hold loaded backends: weights load once per actor, then serve many requests.

The depth, generator and reconstructor pools are planned together from ``ray.cluster_resources()``:

* GPU backends share the GPUs: each GPU backend gets one actor per GPU asking for ``1/n`` of a GPU
  (``n`` = how many of the three want a GPU, and never more than the backend declares), so the pools
  always fit together and every GPU hosts one actor of each. Without GPUs they run as CPU actors.
* Actors together ask for at most ``ray.actor_cpu_share`` of the cluster's CPUs, leaving the rest to
  the scenes' stage tasks, so actors and stage tasks can never wait on each other forever.
* Each actor declares the memory its backend needs (``Resources.memory_gb``, capped at its share of
  the cluster's memory), so Ray places it where that memory is.
* Stage tasks and actors compute with :func:`worker_threads` torch threads, not the one thread Ray's
  ``OMP_NUM_THREADS`` gives a worker with a CPU share of 1 or less.

Actors restart when they die and Ray retries the calls that were in flight. A call that does not return
within ``ray.call_timeout_s`` raises :class:`ModelCallTimeout`, a transient failure of its stage.

Pools are named, detached actors in the ``worldstereo`` namespace, named after what their backends depend
on: every flow process of the cluster (two deployment runs, a CLI batch beside them) uses the same pools
instead of planning a set of its own, and loaded models stay warm between batches until
:func:`release_all_pools` (``worldstereo release-pools``) or the cluster's end.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any

import ray
import torch

from tasks.transport import SETUP_HOOK, register_tensor_transport
from worldstereo.config import RaySettings, Settings
from worldstereo.errors import ConfigurationError, PermanentError
from worldstereo.pipeline.backends import Backend, Resources
from worldstereo.pipeline.registry import backend_class, make_backend

log = logging.getLogger(__name__)
ACTOR_RESTARTS = 3
NAMESPACE = "worldstereo"
KINDS = ("depth", "generator", "reconstructor")
CPUS_PER_CPU_ACTOR = 16
GIB = 1024**3
_lock = threading.Lock()
_pools: dict[str, ScenePools] = {}


class ModelCallTimeout(TimeoutError):
    """A model call did not return within ``ray.call_timeout_s`` (transient: the stage retries)."""


def ensure_ray(settings: RaySettings) -> None:
    """Join the configured cluster, or start a local one sized to this machine (once per process; never a cluster
    that happens to run here, such as the local stack's, unless ``ray.address`` names it)."""
    with _lock:
        if ray.is_initialized():
            return
        job = {"log_to_driver": False, "namespace": NAMESPACE,
               "runtime_env": {"worker_process_setup_hook": SETUP_HOOK}}
        if settings.address:
            ray.init(address=settings.address, **job)
        else:
            ray.init(address="local", num_cpus=settings.num_cpus or os.cpu_count(), num_gpus=settings.num_gpus,
                     include_dashboard=False, object_store_memory=settings.object_store_memory, **job)
        register_tensor_transport()
        log.info("ray resources: %s", ray.cluster_resources())


def worker_threads(settings: RaySettings) -> int:
    """Torch threads of a stage task or model actor: ``worker_threads``, else ``stage_cpus / (1 - actor_cpu_share)``.

    A scene's stage task waits while the model call it made runs, so each scene in flight computes in one
    place at a time and may use its stage's CPUs together with its share of the actors' CPUs.
    """
    return settings.worker_threads or max(1, round(settings.stage_cpus / (1 - settings.actor_cpu_share)))


@ray.remote
class BackendActor:
    """One backend instance, set up once in the actor's process."""

    def __init__(self, kind: str, name: str, settings: Settings) -> None:
        torch.set_num_threads(worker_threads(settings.ray))
        self.backend: Backend = make_backend(kind, name, settings)
        self.failure: PermanentError | None = None
        try:
            self.backend.setup()
        except PermanentError as error:  # bad weights or settings: each call fails its scene with the reason
            self.failure = error

    def call(self, method: str, *args: Any) -> Any:
        if self.failure is not None:
            raise self.failure
        return getattr(self.backend, method)(*args)

    def pid(self) -> int:
        return os.getpid()


@dataclass(frozen=True)
class PoolPlan:
    """How many actors and what each asks of Ray."""

    size: int
    num_gpus: float
    num_cpus: float
    memory: int  # bytes


def plan_pools(needs: dict[str, Resources], cluster: dict[str, float], cpu_share: float = 0.5,
               ) -> dict[str, PoolPlan]:
    """Plans for all pools at once (see the module docstring); ``needs`` maps a kind to its backend's needs."""
    gpus, cpus = cluster.get("GPU", 0.0), cluster.get("CPU", 1.0)
    memory = cluster.get("memory", 0.0)
    on_gpu = [kind for kind, need in needs.items() if need.gpus > 0 and gpus >= 1]
    gpu_size = max(1, int(gpus))
    cpu_size = max(1, int(cpus * cpu_share // CPUS_PER_CPU_ACTOR))
    actors = sum(gpu_size if kind in on_gpu else cpu_size for kind in needs)
    plans = {}
    for kind, need in needs.items():
        size = gpu_size if kind in on_gpu else cpu_size
        gpu = min(need.gpus, 1.0 / len(on_gpu)) if kind in on_gpu else 0.0
        cpu = min(need.cpus, cpus * cpu_share / actors)
        mem = int(min(need.memory_gb * GIB, memory / actors)) if memory else 0
        plans[kind] = PoolPlan(size, gpu, cpu, mem)
    return plans


@dataclass(frozen=True)
class ModelHandles:
    """The actors of the three pools: what a stage task needs to call the models (small, picklable)."""

    actors: dict[str, list]
    call_timeout_s: float

    def actor(self, kind: str, affinity: str) -> Any:
        """The actor of ``kind`` that serves a scene: the same one for all of its calls."""
        actors = self.actors[kind]
        return actors[zlib.crc32(affinity.encode()) % len(actors)]


def pool_key(settings: Settings) -> str:
    """Name of the pools that serve ``settings``: a digest of what a loaded backend and its actor depend on
    (scene-level settings such as storage and trajectories travel with each request)."""
    parts = (settings.depth_backend, settings.generator, settings.reconstructor, settings.models.model_dump_json(),
             settings.generation.model_dump_json(), settings.device, settings.max_depth, settings.default_fov_deg,
             settings.ray.actor_cpu_share, worker_threads(settings.ray))
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:12]


class ScenePools:
    """The depth, generator and reconstructor pools of one configuration (joined when they already run)."""

    def __init__(self, settings: Settings) -> None:
        names = {"depth": settings.depth_backend, "generator": settings.generator,
                 "reconstructor": settings.reconstructor}
        needs = {kind: backend_class(kind, names[kind]).resources for kind in KINDS}
        self.plans = plan_pools(needs, ray.cluster_resources(), settings.ray.actor_cpu_share)
        key, actors = pool_key(settings), {}
        for kind in KINDS:
            plan = self.plans[kind]
            options = {"num_gpus": plan.num_gpus, "num_cpus": plan.num_cpus, "max_restarts": ACTOR_RESTARTS,
                       "max_task_retries": ACTOR_RESTARTS, "namespace": NAMESPACE, "lifetime": "detached",
                       "get_if_exists": True} | ({"memory": plan.memory} if plan.memory else {})
            actors[kind] = [BackendActor.options(name=f"{kind}-{key}-{i}", **options).remote(kind, names[kind], settings)
                            for i in range(plan.size)]
        self.handles = ModelHandles(actors, settings.ray.call_timeout_s)
        log.info("model pools %s: %s", key, self.plans)

    def kill(self) -> None:
        _kill_and_wait([actor for actors in self.handles.actors.values() for actor in actors])


def _kill_and_wait(actors: list, timeout_s: float = 60.0) -> None:
    """Kill ``actors`` and return once they are dead, so that their names can be taken again."""
    for actor in actors:
        ray.kill(actor)
    deadline = time.monotonic() + timeout_s
    for actor in actors:
        while time.monotonic() < deadline:
            try:
                ray.get(actor.pid.remote(), timeout=max(0.1, deadline - time.monotonic()))
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                break
            time.sleep(0.05)


def release_all_pools(settings: RaySettings) -> int:
    """Kill every model actor of the cluster's pools (any configuration, any process); returns how many."""
    ensure_ray(settings)
    actors = [ray.get_actor(entry["name"], namespace=NAMESPACE)
              for entry in ray.util.list_named_actors(all_namespaces=True) if entry["namespace"] == NAMESPACE]
    _kill_and_wait(actors)
    with _lock:
        _pools.clear()
    return len(actors)


def stage_slots(settings: Settings) -> int:
    """How many stage tasks the cluster runs at once beside the model actors."""
    ensure_ray(settings.ray)
    return check_stage_fits(settings.ray, ray.nodes())


def check_stage_fits(settings: RaySettings, nodes: list[dict]) -> int:
    """Stage slots of the cluster's live ``nodes``; a ``stage_cpus`` no node can give beside its share of the
    model actors would wait forever, so it is refused."""
    free = [node["Resources"].get("CPU", 0.0) * (1 - settings.actor_cpu_share) for node in nodes if node.get("Alive")]
    slots = sum(int(cpus // settings.stage_cpus) for cpus in free)
    if slots == 0:
        raise ConfigurationError(
            f"ray.stage_cpus={settings.stage_cpus:g} is more than any node has free beside the model actors "
            f"(at most {max(free, default=0.0):g} CPUs with ray.actor_cpu_share={settings.actor_cpu_share:g}); "
            "lower ray.stage_cpus or ray.actor_cpu_share")
    return slots


def get_pools(settings: Settings) -> ScenePools:
    """The process-wide pools for the configured backends (created on first use).

    A process holds one set: pools for other backends or settings are released first, since each set is
    planned to take its share of the cluster (two sets would leave stage tasks no CPU and wait forever)."""
    ensure_ray(settings.ray)
    key = pool_key(settings)
    with _lock:
        if key not in _pools:
            for stale in _pools.values():
                stale.kill()
            _pools.clear()
            _pools[key] = ScenePools(settings)
        return _pools[key]


@ray.remote
def _load_stage_code(generator: str, hold_s: float) -> int:
    import tasks.remote_stage  # noqa: F401  (what a stage task imports first)
    from worldstereo.pipeline.media import encode_jpeg

    backend_class("generator", generator)  # a stage asks the generator's class for its clip length
    encode_jpeg(torch.zeros(8, 8, 3))  # a process's first image encode loads every image codec
    time.sleep(hold_s)  # held, so that the other warm-up tasks land on other workers
    return os.getpid()


def warm_up(settings: Settings) -> None:
    """Start the pools' actors and load the stage code (modules, the generator's class, image codecs) in one worker
    per stage slot; returns when all are up."""
    pools = get_pools(settings)
    ray.get([actor.pid.remote() for actors in pools.handles.actors.values() for actor in actors])
    ray.get([_load_stage_code.options(num_cpus=settings.ray.stage_cpus).remote(settings.generator, 0.5)
             for _ in range(stage_slots(settings))])


def shutdown_pools() -> None:
    """Drop every pool (their actors exit)."""
    with _lock:
        for pools in _pools.values():
            pools.kill()
        _pools.clear()
