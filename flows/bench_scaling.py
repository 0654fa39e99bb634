"""Scaling of the scene-batch flow: N scenes whose generator sleeps a fixed time, on a local Ray cluster with
k worker slots (k stage slots and k generator actors, each on a declared GPU).

Each (k, N) runs in a process of its own against one shared Prefect API, so that Ray is sized per run and the
flow process's peak memory (``ru_maxrss``) is that run's. A warm-up batch of k scenes starts the actors first;
the figures are those of the timed batch after it. Model compute is simulated (a sleep), so k slots may exceed
the machine's cores; the scenes' CPU geometry is real and small.

On a machine with few cores the geometry of k scenes at once competes for them, so each point also measures the
CPU the batch used (``cpu_s``: the point's process tree, i.e. flow, Ray, stage workers and actors, and the Prefect
API server; ``flow_cpu_s``: the flow process alone) and the cores other processes kept busy meanwhile
(``others_cores``). ``cores_used`` is what the batch got; ``cores_needed`` what it would need to run at k times
the speed of k = 1: where it exceeds what the machine leaves, the loss is CPU contention, not orchestration.
The efficiency splits into two factors: ``occupancy``, the share of the k slots' time that scenes ran in (their
task runs' durations over k times the batch time: what orchestration keeps busy), and ``scene_slowdown``, the
mean scene time over that at k = 1 (what contention for the cores costs each scene); efficiency = (occupancy /
occupancy at k = 1) / slowdown.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from worldstereo.pipeline.backends import GeneratedVideo, GenerationRequest, Resources
from worldstereo.pipeline.generators.oracle import OracleGenerator

SLEEP_ENV = "WORLDSTEREO_BENCH_GENERATOR_SLEEP_S"
API_PID_ENV = "WORLDSTEREO_BENCH_API_PID"
GENERATOR = "flows.bench_scaling:SleepingGenerator"


class SleepingGenerator(OracleGenerator):
    """The oracle's frames after a fixed sleep: model compute without a model. Wants a GPU."""

    name = "sleeping-oracle"
    resources = Resources(gpus=1.0, cpus=1.0, memory_gb=0.5)

    def generate(self, request: GenerationRequest) -> GeneratedVideo:
        time.sleep(float(os.environ.get(SLEEP_ENV, "8")))
        return super().generate(request)


def _scenes(settings, root: Path, count: int, prefix: str, first_seed: int = 0) -> None:
    """``count`` distinct small perspective scenes (room and object samples of successive seeds)."""
    from worldstereo.storage.factory import open_store
    from worldstereo.storage.upload import upload_inputs
    from worldstereo.synthetic.samples import write_samples

    images = [p for seed in range(first_seed, first_seed + (count + 1) // 2)
              for p in write_samples(root / str(seed), seed=seed, height=48, width=80, panorama_height=32)
              if p.stem != "panorama"][:count]
    store = open_store(settings.storage)
    for i, image in enumerate(images):
        upload_inputs(store, settings.storage.input_bucket, [image], f"{prefix}{i:03d}/")


def _proc_stat(pid: str) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()  # from the state on: the command may hold spaces


def tree_cpu_s(roots: list[int]) -> float:
    """CPU seconds (user + system, with reaped children's) of ``roots`` and their live descendants (Linux /proc)."""
    parents, cpu = {}, {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = _proc_stat(pid)
        except OSError:  # exited meanwhile
            continue
        parents[int(pid)] = int(fields[1])
        cpu[int(pid)] = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    tree, todo = set(), [pid for pid in roots if pid in cpu]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo += [child for child, parent in parents.items() if parent == pid and child not in tree]
    return sum(cpu[pid] for pid in tree) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds all cores of the machine spent busy since boot (``/proc/stat``)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def run_point(slots: int, scenes: int, sleep_s: float) -> dict:
    """One (k, N) point in this process: warm-up batch of k scenes, then the timed batch of N."""
    from flows.scene_batch import batch_settings, run_scene_batch
    from tasks.ray_pools import ensure_ray

    os.environ[SLEEP_ENV] = str(sleep_s)
    trajectory = {"num_frames": 3, "order": ["orbit"], "planner": "presets"}
    with tempfile.TemporaryDirectory() as tmp:
        overrides = {"resolution_scale": 0.25, "storage": {"backend": "local", "root": str(Path(tmp) / "store")},
                     "ray": {"num_cpus": 2 * slots, "num_gpus": slots},
                     "splat": {"enabled": False}}  # the orchestration around the model, not splat training
        settings = batch_settings(GENERATOR, trajectory=trajectory, overrides=overrides)
        started = time.perf_counter()
        ensure_ray(settings.ray)
        ray_start_s = time.perf_counter() - started
        _scenes(settings, Path(tmp) / "warm", slots, "warm/", first_seed=1000)  # other bytes: other scenes
        run = {"generator": GENERATOR, "trajectory": trajectory, "overrides": overrides}
        started = time.perf_counter()
        run_scene_batch(input_prefix="warm/", **run)
        warm_s = time.perf_counter() - started
        _scenes(settings, Path(tmp) / "timed", scenes, "timed/")
        ours = [os.getpid()] + ([int(os.environ[API_PID_ENV])] if API_PID_ENV in os.environ else [])
        cpu, busy, flow_cpu = tree_cpu_s(ours), machine_busy_s(), time.process_time()
        started = time.perf_counter()
        rows = run_scene_batch(input_prefix="timed/", **run)
        batch_s = time.perf_counter() - started
        cpu, busy, flow_cpu = tree_cpu_s(ours) - cpu, machine_busy_s() - busy, time.process_time() - flow_cpu
    done = sum(row["status"] == "done" for row in rows)
    scene_s = [row["duration_s"] for row in rows if row["status"] == "done"]
    others_cores = max(0.0, busy - cpu) / batch_s
    return {"slots": slots, "scenes": scenes, "done": done, "batch_s": batch_s, "throughput": done / batch_s,
            "warmup_s": warm_s, "ray_start_s": ray_start_s, "cpu_s": cpu, "flow_cpu_s": flow_cpu,
            "others_cores": others_cores, "cores_used": cpu / batch_s,
            "scene_s": sum(scene_s) / max(len(scene_s), 1), "occupancy": sum(scene_s) / (slots * batch_s),
            "flow_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_scaling_benchmark(slots: tuple[int, ...] = (1, 2, 4), scenes: int = 8, memory_scenes: tuple[int, int] = (8, 32),
                          sleep_s: float = 8.0) -> dict:
    """Throughput at each k (N = ``scenes``), and flow peak memory at the largest k for both ``memory_scenes``."""
    from prefect.server.api.server import SubprocessASGIServer

    started = time.perf_counter()
    server = SubprocessASGIServer()
    server.start(timeout=600)
    api_start_s = time.perf_counter() - started
    env = os.environ | {"PREFECT_API_URL": server.api_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                        API_PID_ENV: str(server.server_process.pid)}
    points = []
    try:
        wanted = [(k, scenes) for k in slots] + [(max(slots), n) for n in memory_scenes if n != scenes]
        for k, n in wanted:
            out = subprocess.run([sys.executable, "-m", "flows.bench_scaling", str(k), str(n), str(sleep_s)],
                                 env=env, capture_output=True, text=True)
            if out.returncode:
                raise RuntimeError(f"point k={k}, N={n} failed:\n{out.stderr[-4000:]}")
            points.append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        server.stop()
    base = next(p for p in points if p["slots"] == min(slots) and p["scenes"] == scenes)
    timed = [p for p in points if p["scenes"] == scenes]
    speedup = {p["slots"]: p["throughput"] / base["throughput"] for p in timed}
    linear = {p["slots"]: p["done"] * min(slots) / (base["throughput"] * p["slots"]) for p in timed}  # batch s, ideal
    memory = {p["scenes"]: p["flow_peak_rss_mb"] for p in points if p["slots"] == max(slots)}
    return {"points": points, "speedup": speedup, "efficiency": {k: s * min(slots) / k for k, s in speedup.items()},
            "cores_needed": {p["slots"]: p["cpu_s"] / linear[p["slots"]] for p in timed},
            "scene_slowdown": {p["slots"]: p["scene_s"] / base["scene_s"] for p in timed},
            "flow_peak_rss_mb": memory, "sleep_s": sleep_s, "api_start_s": api_start_s, "cpu_count": os.cpu_count()}


def format_report(result: dict) -> str:
    """Human-readable summary of :func:`run_scaling_benchmark`."""
    lines = [f"generator sleeps {result['sleep_s']} s per trajectory; {result['cpu_count']} CPU cores; "
             f"Prefect API start {result['api_start_s']:.1f} s (not included)",
             "slots  scenes  done  batch s  scenes/s  speedup  efficiency  CPU s  flow CPU s  others' cores  "
             "cores used  cores needed  occupancy  scene slowdown  flow peak RSS MB"]
    for p in result["points"]:
        k, timed = p["slots"], p["scenes"] == result["points"][0]["scenes"]

        def per_k(name: str, width: int, k: int = k, timed: bool = timed) -> str:  # figures of the timed points
            return f"{result[name][k]:>{width}.2f}" if timed else " " * width

        lines.append(f"{k:>5}  {p['scenes']:>6}  {p['done']:>4}  {p['batch_s']:>7.1f}  {p['throughput']:>8.3f}  "
                     f"{per_k('speedup', 7)}  {per_k('efficiency', 10)}  {p['cpu_s']:>5.0f}  {p['flow_cpu_s']:>10.1f}  "
                     f"{p['others_cores']:>13.2f}  {p['cores_used']:>10.2f}  {per_k('cores_needed', 12)}  "
                     f"{p['occupancy']:>9.2f}  {per_k('scene_slowdown', 14)}  {p['flow_peak_rss_mb']:>16.0f}")
    return "\n".join(lines)


if __name__ == "__main__":
    k, n, sleep = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    print(json.dumps(run_point(k, n, sleep)))
