"""Scaling of the scene-batch flow: N scenes whose generator sleeps a fixed time, on a local Ray cluster with
k worker slots (k stage slots and k generator actors, each on a declared GPU).

Each (k, N) runs in a process of its own against one shared Prefect API, so that Ray is sized per run and the
flow process's peak memory (``ru_maxrss``) is that run's. A warm-up batch of k scenes starts the actors first;
the figures are those of the timed batch after it. Model compute is simulated (a sleep), so k slots may exceed
the machine's cores; the scenes' CPU geometry is real and small.
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


def run_point(slots: int, scenes: int, sleep_s: float) -> dict:
    """One (k, N) point in this process: warm-up batch of k scenes, then the timed batch of N."""
    from flows.scene_batch import batch_settings, run_scene_batch
    from tasks.ray_pools import ensure_ray

    os.environ[SLEEP_ENV] = str(sleep_s)
    trajectory = {"num_frames": 3, "order": ["orbit"]}
    with tempfile.TemporaryDirectory() as tmp:
        overrides = {"resolution_scale": 0.25, "storage": {"backend": "local", "root": str(Path(tmp) / "store")},
                     "ray": {"num_cpus": 2 * slots, "num_gpus": slots}}
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
        started = time.perf_counter()
        rows = run_scene_batch(input_prefix="timed/", **run)
        batch_s = time.perf_counter() - started
    done = sum(row["status"] == "done" for row in rows)
    return {"slots": slots, "scenes": scenes, "done": done, "batch_s": batch_s, "throughput": done / batch_s,
            "warmup_s": warm_s, "ray_start_s": ray_start_s,
            "flow_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_scaling_benchmark(slots: tuple[int, ...] = (1, 2, 4), scenes: int = 8, memory_scenes: tuple[int, int] = (8, 32),
                          sleep_s: float = 8.0) -> dict:
    """Throughput at each k (N = ``scenes``), and flow peak memory at the largest k for both ``memory_scenes``."""
    from prefect.server.api.server import SubprocessASGIServer

    started = time.perf_counter()
    server = SubprocessASGIServer()
    server.start(timeout=600)
    api_start_s = time.perf_counter() - started
    env = os.environ | {"PREFECT_API_URL": server.api_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    points = []
    try:
        wanted = [(k, scenes) for k in slots] + [(max(slots), n) for n in memory_scenes if n != scenes]
        for k, n in wanted:
            out = subprocess.run([sys.executable, "-m", "flows.bench_scaling", str(k), str(n), str(sleep_s)],
                                 env=env, capture_output=True, text=True, check=True)
            points.append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        server.stop()
    base = next(p["throughput"] for p in points if p["slots"] == min(slots) and p["scenes"] == scenes)
    speedup = {p["slots"]: p["throughput"] / base for p in points if p["scenes"] == scenes}
    memory = {p["scenes"]: p["flow_peak_rss_mb"] for p in points if p["slots"] == max(slots)}
    return {"points": points, "speedup": speedup, "efficiency": {k: s / k for k, s in speedup.items()},
            "flow_peak_rss_mb": memory, "sleep_s": sleep_s, "api_start_s": api_start_s, "cpu_count": os.cpu_count()}


def format_report(result: dict) -> str:
    """Human-readable summary of :func:`run_scaling_benchmark`."""
    lines = [f"generator sleeps {result['sleep_s']} s per trajectory; {result['cpu_count']} CPU cores; "
             f"Prefect API start {result['api_start_s']:.1f} s (not included)",
             "slots  scenes  done  batch s  scenes/s  speedup  efficiency  flow peak RSS MB  Ray start s"]
    for p in result["points"]:
        speedup = result["speedup"].get(p["slots"]) if p["scenes"] == result["points"][0]["scenes"] else None
        lines.append(f"{p['slots']:>5}  {p['scenes']:>6}  {p['done']:>4}  {p['batch_s']:>7.1f}  {p['throughput']:>8.3f}  "
                     + (f"{speedup:>7.2f}  {speedup / p['slots']:>10.2f}" if speedup else f"{'':>7}  {'':>10}")
                     + f"  {p['flow_peak_rss_mb']:>16.0f}  {p['ray_start_s']:>11.1f}")
    return "\n".join(lines)


if __name__ == "__main__":
    k, n, sleep = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    print(json.dumps(run_point(k, n, sleep)))
