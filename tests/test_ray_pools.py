"""Pool and stage-slot planning for a cluster, from its alive nodes alone (no cluster needed)."""

from __future__ import annotations

from collections import Counter

import pytest

from tasks.ray_pools import check_stage_fits, least_busy, plan_cluster, plan_pools, worker_threads
from worldstereo.config import RaySettings
from worldstereo.errors import ConfigurationError
from worldstereo.pipeline.backends import Resources

CPU_BACKENDS = {"depth": Resources(cpus=0.5, memory_gb=0.5), "generator": Resources(cpus=1.0, memory_gb=2.0),
                "reconstructor": Resources(cpus=1.0, memory_gb=1.0)}


def node(name: str, cpus: float, alive: bool = True, gpus: float = 0.0) -> dict:
    return {"NodeID": name, "Resources": {"CPU": cpus, "GPU": gpus, "memory": 64 * 1024**3}, "Alive": alive}


def test_stage_slots_count_the_cpus_each_node_keeps_beside_its_actors() -> None:
    settings = RaySettings(stage_cpus=2.0, actor_cpu_share=0.5)
    plan = plan_cluster(CPU_BACKENDS, [node("b", 16), node("a", 8), node("c", 64, alive=False)], 0.5)
    assert [n.node_id for n in plan.nodes] == ["a", "b"]  # alive nodes only, in an order every process shares
    assert [n.free_cpus for n in plan.nodes] == [8 - 2.5, 16 - 2.5]  # the actors ask what their backends need
    assert check_stage_fits(settings, plan) == 2 + 6


def test_small_nodes_keep_what_their_actors_leave_and_a_head_without_cpus_hosts_none() -> None:
    plan = plan_cluster(CPU_BACKENDS, [node("head", 0), node("w1", 1), node("w2", 1)], 0.5)
    assert [sorted(n.pools) for n in plan.nodes] == [[], ["depth", "generator", "reconstructor"]] + [
        ["depth", "generator", "reconstructor"]]
    assert all(0.5 <= n.free_cpus < 0.5 + 1e-3 for n in plan.nodes[1:])  # Ray's 1/10,000 units never round over
    assert check_stage_fits(RaySettings(stage_cpus=0.5), plan) == 2
    assert plan.per_kind()["generator"].size == 2


def test_a_lost_node_leaves_the_survivors_actors_as_they_were() -> None:
    both = plan_cluster(CPU_BACKENDS, [node("w1", 4), node("w2", 4)], 0.5)
    one = plan_cluster(CPU_BACKENDS, [node("w1", 4), node("w2", 4, alive=False)], 0.5)
    assert one != both and one.nodes == both.nodes[:1]  # same actors (same names) on w1, none planned on w2
    assert (check_stage_fits(RaySettings(stage_cpus=1.0), both), check_stage_fits(RaySettings(stage_cpus=1.0), one)) == (4, 2)


def test_a_stage_no_node_can_hold_is_refused_not_left_waiting() -> None:
    plan = plan_cluster(CPU_BACKENDS, [node("a", 2), node("b", 2)], 0.5)
    with pytest.raises(ConfigurationError, match="ray.stage_cpus=2 .*2 alive nodes.*at most 1 CPUs"):
        check_stage_fits(RaySettings(stage_cpus=2.0, actor_cpu_share=0.5), plan)
    with pytest.raises(ConfigurationError, match="no alive Ray node can host the depth, generator, reconstructor"):
        plan_cluster(CPU_BACKENDS, [node("head", 0), node("w1", 4, alive=False)], 0.5)


def test_gpu_backends_go_to_the_nodes_with_gpus() -> None:
    gpu = Resources(gpus=1.0, cpus=4.0, memory_gb=16.0)
    needs = {"depth": gpu, "generator": gpu, "reconstructor": CPU_BACKENDS["reconstructor"]}
    plan = plan_cluster(needs, [node("cpu", 32), node("gpu", 32, gpus=2)], 0.5)
    assert {n.node_id: {k: (p.size, p.num_gpus) for k, p in n.pools.items()} for n in plan.nodes} == {
        "cpu": {"reconstructor": (1, 0.0)},
        "gpu": {"depth": (2, 0.5), "generator": (2, 0.5), "reconstructor": (1, 0.0)}}


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


def test_stages_spread_over_the_actors_of_a_pool() -> None:
    actors, busy = [object() for _ in range(4)], Counter()
    for salt in (7, 7, 3, 0):  # four stages at once, two of the same scene: one actor each
        busy[id(least_busy(actors, busy, salt))] += 1
    assert sorted(busy[id(a)] for a in actors) == [1, 1, 1, 1]
    busy[id(actors[2])] -= 1  # a stage ends: the next one takes its actor
    assert least_busy(actors, busy, 5) is actors[2]
    assert least_busy(actors, Counter(), 6) is actors[2]  # idle pool: the scene's own first choice
