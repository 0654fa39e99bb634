"""Ray actor pools that hold loaded backends: weights load once per actor, then serve many requests.

The depth, generator and reconstructor pools are planned together, node by node, from the alive nodes
(``ray.nodes()``), and planned again whenever the alive nodes change:

* Every node with CPUs hosts the pools' actors, pinned to it and sized from its own resources, so the
  planner knows what each node leaves to stage tasks (:func:`stage_slots` counts only those CPUs).
* GPU backends share a node's GPUs: each GPU backend gets one actor per GPU asking for ``1/n`` of a GPU
  (``n`` = how many of the three want a GPU, and never more than the backend declares), so the pools
  always fit together and every GPU hosts one actor of each. Without GPUs they run as CPU actors.
* A node's actors together ask for at most ``ray.actor_cpu_share`` of its CPUs, leaving the rest to
  the scenes' stage tasks, so actors and stage tasks can never wait on each other forever.
* Each actor declares the memory its backend needs (``Resources.memory_gb``, capped at its share of
  its node's memory).
* Stage tasks and actors compute with :func:`worker_threads` torch threads, not the one thread Ray's
  ``OMP_NUM_THREADS`` gives a worker with a CPU share of 1 or less.

An actor whose process dies restarts on its node and Ray retries the calls that were in flight; an actor
whose node is lost is not restarted elsewhere. A call that does not return within ``ray.call_timeout_s``
raises :class:`ModelCallTimeout`, a transient failure of its stage.

Pools are named, detached actors in the ``worldstereo`` namespace, named after what their backends depend
on and their node: every flow process of the cluster (two deployment runs, a CLI batch beside them) uses
the same pools instead of planning a set of its own, and loaded models stay warm between batches until
:func:`release_all_pools` (``worldstereo release-pools``) or the cluster's end.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import math
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

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
RAY_UNITS = 10_000  # Ray counts resources in units of 1/10,000
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
    """Plans for all pools at once on one node's resources ``cluster`` (see the module docstring); ``needs`` maps
    a kind to its backend's needs."""
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
        cpu = math.floor(min(need.cpus, cpus * cpu_share / actors) * RAY_UNITS) / RAY_UNITS  # never above the share
        mem = int(min(need.memory_gb * GIB, memory / actors)) if memory else 0
        plans[kind] = PoolPlan(size, gpu, cpu, mem)
    return plans


@dataclass(frozen=True)
class NodePlan:
    """The actors planned on one alive node, and the CPUs they leave to stage tasks."""

    node_id: str
    cpus: float
    pools: dict[str, PoolPlan]

    @property
    def free_cpus(self) -> float:
        return self.cpus - sum(plan.size * plan.num_cpus for plan in self.pools.values())


@dataclass(frozen=True)
class ClusterPlan:
    """The pools of every alive node (sorted by node id: every process plans the same actors)."""

    nodes: tuple[NodePlan, ...]

    def slots(self, stage_cpus: float) -> int:
        """Stage tasks of ``stage_cpus`` that fit at once beside the actors."""
        return sum(int(node.free_cpus / stage_cpus + 1e-9) for node in self.nodes)

    def per_kind(self) -> dict[str, PoolPlan]:
        """Each pool over the cluster: its actors in all and the most one of them asks."""
        pools: dict[str, PoolPlan] = {}
        for node in self.nodes:
            for kind, p in node.pools.items():
                q = pools.get(kind)
                pools[kind] = p if q is None else PoolPlan(q.size + p.size, max(q.num_gpus, p.num_gpus),
                                                           max(q.num_cpus, p.num_cpus), max(q.memory, p.memory))
        return pools


def plan_cluster(needs: dict[str, Resources], nodes: list[dict], cpu_share: float) -> ClusterPlan:
    """Pools planned node by node from the alive ``nodes`` (``ray.nodes()``): every node with CPUs hosts an actor
    of each backend (a backend that wants a GPU only on nodes with one, if any node has), sized by
    :func:`plan_pools` from that node's own resources, so an actor never needs CPUs of another node."""
    alive = sorted((node for node in nodes if node.get("Alive")), key=lambda node: node["NodeID"])
    any_gpu = any(node["Resources"].get("GPU", 0.0) >= 1 for node in alive)
    planned = []
    for node in alive:
        resources = node["Resources"]
        has_gpu = resources.get("GPU", 0.0) >= 1
        here = {kind: need for kind, need in needs.items()
                if resources.get("CPU", 0.0) > 0 and (has_gpu or not (any_gpu and need.gpus > 0))}
        planned.append(NodePlan(node["NodeID"], resources.get("CPU", 0.0),
                                plan_pools(here, resources, cpu_share) if here else {}))
    plan = ClusterPlan(tuple(planned))
    missing = [kind for kind in needs if kind not in plan.per_kind()]
    if missing:
        raise ConfigurationError(f"no alive Ray node can host the {', '.join(missing)} pool "
                                 f"({len(alive)} alive nodes, {sum(n.cpus for n in planned):g} CPUs)")
    return plan


def pool_key(settings: Settings) -> str:
    """Name of the pools that serve ``settings``: a digest of what a loaded backend and its actor depend on
    (scene-level settings such as storage and trajectories travel with each request)."""
    parts = (settings.depth_backend, settings.generator, settings.reconstructor, settings.models.model_dump_json(),
             settings.generation.model_dump_json(), settings.device, settings.max_depth, settings.default_fov_deg,
             settings.ray.actor_cpu_share, worker_threads(settings.ray))
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:12]


def backend_names(settings: Settings) -> dict[str, str]:
    """The configured backend of each kind."""
    return dict(zip(KINDS, (settings.depth_backend, settings.generator, settings.reconstructor)))


def live_plan(settings: Settings) -> ClusterPlan:
    """The pools as planned for the cluster's alive nodes now."""
    needs = {kind: backend_class(kind, name).resources for kind, name in backend_names(settings).items()}
    return plan_cluster(needs, ray.nodes(), settings.ray.actor_cpu_share)


def least_busy(actors: list, busy: Counter[int], salt: int) -> Any:
    """The actor with the fewest stages in flight (``busy``, by ``id``); ties go to the first from ``salt`` on."""
    return min(enumerate(actors), key=lambda a: (busy[id(a[1])], (a[0] - salt) % len(actors)))[1]


@dataclass(frozen=True)
class ModelHandles:
    """The actors of the three pools (small, picklable)."""

    actors: dict[str, list]


@dataclass(frozen=True)
class StageActors:
    """The actor of each kind that serves one stage, and the deadline of each model call (small, picklable)."""

    actors: dict[str, Any]
    call_timeout_s: float


class ScenePools:
    """The depth, generator and reconstructor pools of one configuration on the nodes of ``plan`` (actors that
    already run under their names are joined).

    Actors are named after the configuration and their node and pinned to it: an actor whose process dies
    restarts there, and one whose node is lost dies with it instead of taking CPUs elsewhere that the
    survivors' stage tasks need; the next :func:`get_pools` plans the pools of the nodes still alive."""

    def __init__(self, settings: Settings, plan: ClusterPlan) -> None:
        self.plan, self.plans = plan, plan.per_kind()
        names = backend_names(settings)
        key, actors = pool_key(settings), {kind: [] for kind in KINDS}
        for node in plan.nodes:
            where = NodeAffinitySchedulingStrategy(node.node_id, soft=False)
            for kind, pool in node.pools.items():
                options = {"num_gpus": pool.num_gpus, "num_cpus": pool.num_cpus, "max_restarts": ACTOR_RESTARTS,
                           "max_task_retries": ACTOR_RESTARTS, "namespace": NAMESPACE, "lifetime": "detached",
                           "get_if_exists": True, "scheduling_strategy": where} | (
                              {"memory": pool.memory} if pool.memory else {})
                actors[kind] += [BackendActor.options(name=f"{kind}-{key}-{node.node_id[:12]}-{i}", **options)
                                 .remote(kind, names[kind], settings) for i in range(pool.size)]
        self.handles = ModelHandles(actors)
        self.call_timeout_s = settings.ray.call_timeout_s
        self._busy: Counter[int] = Counter()
        self._busy_lock = threading.Lock()
        log.info("model pools %s on %d nodes: %s", key, len(plan.nodes), self.plans)

    @contextmanager
    def lease(self, affinity: str) -> Iterator[StageActors]:
        """The least busy actor of each kind for one stage (busy: stages of this process using it); ties go
        by ``affinity``, so that processes sharing the pools spread their scenes too."""
        salt = zlib.crc32(affinity.encode())
        with self._busy_lock:
            chosen = {kind: least_busy(actors, self._busy, salt) for kind, actors in self.handles.actors.items()}
            self._busy.update(id(actor) for actor in chosen.values())
        try:
            yield StageActors(chosen, self.call_timeout_s)
        finally:
            with self._busy_lock:
                self._busy.subtract(id(actor) for actor in chosen.values())

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
    """How many stage tasks the cluster's alive nodes run at once beside the model actors planned on them."""
    ensure_ray(settings.ray)
    return check_stage_fits(settings.ray, live_plan(settings))


def check_stage_fits(settings: RaySettings, plan: ClusterPlan) -> int:
    """Stage slots of ``plan``; a ``stage_cpus`` that no node can give beside its actors would wait forever, so it
    is refused."""
    slots = plan.slots(settings.stage_cpus)
    if slots == 0:
        free = max((node.free_cpus for node in plan.nodes), default=0.0)
        raise ConfigurationError(
            f"ray.stage_cpus={settings.stage_cpus:g} is more than any of the {len(plan.nodes)} alive nodes has free "
            f"beside the model actors (at most {free:.4g} CPUs with ray.actor_cpu_share={settings.actor_cpu_share:g}); "
            "lower ray.stage_cpus or ray.actor_cpu_share, or add nodes")
    return slots


def get_pools(settings: Settings) -> ScenePools:
    """The process-wide pools for the configured backends on the cluster's alive nodes (planned again when the
    nodes change: the actors of nodes still alive are the same ones, by name).

    A process holds one set: pools for other backends or settings are released first, since each set is
    planned to take its share of the cluster (two sets would leave stage tasks no CPU and wait forever)."""
    ensure_ray(settings.ray)
    key, plan = pool_key(settings), live_plan(settings)
    with _lock:
        if key not in _pools:
            for stale in _pools.values():
                stale.kill()
            _pools.clear()
        if key not in _pools or _pools[key].plan != plan:
            _pools[key] = ScenePools(settings, plan)
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
    per stage slot; returns when all are up (each wait at most ``ray.stage_timeout_s``)."""
    pools, timeout = get_pools(settings), settings.ray.stage_timeout_s
    ray.get([actor.pid.remote() for actors in pools.handles.actors.values() for actor in actors], timeout=timeout)
    ray.get([_load_stage_code.options(num_cpus=settings.ray.stage_cpus).remote(settings.generator, 0.5)
             for _ in range(stage_slots(settings))], timeout=timeout)


def shutdown_pools() -> None:
    """Drop every pool (their actors exit)."""
    with _lock:
        for pools in _pools.values():
            pools.kill()
        _pools.clear()
