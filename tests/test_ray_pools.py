"""Pool and stage-slot planning for a cluster, from its resources alone (no cluster needed)."""

from __future__ import annotations

import pytest

from tasks.ray_pools import check_stage_fits, plan_pools, worker_threads
from worldstereo.config import RaySettings
from worldstereo.errors import ConfigurationError
from worldstereo.pipeline.backends import Resources


def node(cpus: float, alive: bool = True) -> dict:
    return {"Resources": {"CPU": cpus}, "Alive": alive}


def test_stage_slots_count_each_node_beside_its_actor_share() -> None:
    settings = RaySettings(stage_cpus=2.0, actor_cpu_share=0.5)
    assert check_stage_fits(settings, [node(16), node(8), node(64, alive=False)]) == 4 + 2


def test_a_stage_no_node_can_hold_is_refused_not_left_waiting() -> None:
    with pytest.raises(ConfigurationError, match="ray.stage_cpus=2 .*at most 1 CPUs"):
        check_stage_fits(RaySettings(stage_cpus=2.0, actor_cpu_share=0.5), [node(2), node(2)])


def test_workers_use_their_stage_cpus_and_the_actors_share() -> None:
    # a stage waits while its model call runs: one scene in flight computes in one place at a time
    assert worker_threads(RaySettings()) == 2
    assert worker_threads(RaySettings(stage_cpus=4.0, actor_cpu_share=0.2)) == 5
    assert worker_threads(RaySettings(stage_cpus=0.25, actor_cpu_share=0.5)) == 1
    assert worker_threads(RaySettings(worker_threads=3)) == 3


def test_three_gpu_backends_fit_on_every_gpu_together() -> None:
    gpu = Resources(gpus=1.0, cpus=4.0, memory_gb=16.0)
    plans = plan_pools({"depth": gpu, "generator": gpu, "reconstructor": gpu},
                       {"GPU": 2.0, "CPU": 32.0, "memory": 96 * 1024**3})
    assert {k: (p.size, p.num_gpus) for k, p in plans.items()} == {k: (2, 1 / 3) for k in plans}
    assert sum(p.size * p.num_cpus for p in plans.values()) <= 16.0
    assert sum(p.size * p.memory for p in plans.values()) <= 96 * 1024**3
