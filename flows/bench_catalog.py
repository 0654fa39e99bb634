"""Catalog scale: what a batch and each of its scenes cost as the catalog grows.

For each catalog size N, in a process of its own with a Prefect API (and so a database) of its own: N tiny distinct
inputs (48x80 room views with depth and camera files) are written into a local input bucket; registering them
(listing, reading, hashing, the manifest write), selecting the runnable scenes and reading one scene's row are
timed as library calls (the scan, which reads and hashes every input, apart from the catalog's registration);
folding the status changes a batch of N leaves (a running and a done change per scene) is timed as one compaction. Then ``run`` of the pending scenes go through the real ``scene-batch`` flow (shards,
claims, Ray stage tasks) with the zero-cost generator (the GGM render as the video), after a warm-up batch that
starts Prefect's client and the Ray pools; the flow process's CPU seconds, peak memory, Prefect database growth and
task runs are measured over that batch and divided by the scenes it ran.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

from worldstereo.bench.pipeline import ggm_generator
from worldstereo.pipeline.backends import GeneratedVideo, GenerationRequest, Resources, VideoGenerator

GENERATOR = "flows.bench_catalog:GgmGenerator"
EXTRAPOLATE_TO = 100_000
INPUTS = "catalog-bench/"


class GgmGenerator(VideoGenerator):
    """The zero-cost generator: the GGM render as the video and its depth as the geometry."""

    name = "ggm"
    resources = Resources(cpus=1.0, memory_gb=0.5)

    def generate(self, request: GenerationRequest) -> GeneratedVideo:
        return ggm_generator(request)


def write_inputs(bucket_dir: Path, count: int) -> None:
    """``count`` distinct tiny inputs straight into a local store's bucket directory: the room sample with its index
    written into its first pixels (new bytes, a new scene), the depth and camera files linked from one copy."""
    from worldstereo.synthetic.samples import write_samples

    sample = next(p for p in write_samples(bucket_dir.parent / "sample", seed=0, height=48, width=80,
                                           panorama_height=32) if p.stem == "room")
    pixels = np.asarray(Image.open(sample).convert("RGB")).copy()
    for i in range(count):
        folder = bucket_dir / INPUTS / f"{i:06d}"
        folder.mkdir(parents=True)
        for suffix in (".depth.npy", ".camera.json"):
            os.link(sample.with_name(f"room{suffix}"), folder / f"room{suffix}")
        pixels[0, :3] = np.frombuffer(i.to_bytes(9, "big"), np.uint8).reshape(3, 3)
        buffer = BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
        (folder / "room.png").write_bytes(buffer.getvalue())


def _prefect_db_bytes() -> int:
    home = Path(os.environ["PREFECT_HOME"])
    return sum(p.stat().st_size for p in home.glob("prefect.db*"))


def _task_runs() -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return int(client.request("POST", "/task_runs/count", json={}).json())


def _timed(call):
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def filesystem_of(path: Path) -> str:
    """The file system holding ``path`` and its mount options (``/proc/mounts``): what a local store's costs rest on
    (e.g. ext4 mounted with ``discard`` trims every freed block as a file is deleted)."""
    path = path.resolve()
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    best = max((m for m in mounts if path.is_relative_to(m[1])), key=lambda m: len(m[1]))
    return f"{best[2]} ({best[3]}) at {best[1]}"


def run_point(scenes: int, run: int, root_dir: str | None = None) -> dict:
    """One catalog size, in this process, with the local store under ``root_dir`` (see the module docstring)."""
    from flows.scene_batch import batch_settings, run_scene_batch, select_scenes
    from worldstereo.catalog.manifests import Catalog
    from worldstereo.catalog.scan import scan_inputs
    from worldstereo.catalog.schemas import SceneStatus
    from worldstereo.storage.factory import open_store

    root = Path(tempfile.mkdtemp(prefix="catalog-bench-", dir=root_dir))
    try:
        overrides = {"storage": {"backend": "local", "root": str(root / "store")}, "ray": {"num_cpus": 2},
                     "batch": {"detail_max_scenes": 0}, "splat": {"enabled": False}}  # orchestration, not training
        trajectory = {"num_frames": 3, "order": ["orbit"], "planner": "presets"}
        settings = batch_settings(GENERATOR, trajectory=trajectory, overrides=overrides)
        input_bucket, work_bucket = settings.storage.input_bucket, settings.storage.work_bucket
        write_inputs(root / "store" / input_bucket, scenes)
        store = open_store(settings.storage)
        catalog = Catalog(store, work_bucket)

        scan, scan_s = _timed(lambda: scan_inputs(store, input_bucket, INPUTS, catalog.input_versions()))
        new_ids, register_s = _timed(lambda: catalog.register(scan.inputs).scene_ids)
        selected, select_s = _timed(lambda: select_scenes(catalog, new_ids, None, False, None))
        ids = random.Random(0).sample(new_ids, min(50, len(new_ids)))
        get_ms = 1000 * statistics.median(_timed(lambda s=s: catalog.get(s))[1] for s in ids)

        # what a batch of N leaves to fold: a running and a done change per scene
        entries = catalog.by_status(SceneStatus.PENDING)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda e: catalog.advance(catalog.advance(e, SceneStatus.RUNNING), SceneStatus.DONE), entries))
        folded, compact_s = _timed(catalog.compact)
        for entry in catalog.by_status(SceneStatus.DONE):  # runnable again, for the flow below
            catalog.advance(entry, SceneStatus.PENDING)
        catalog.compact()

        parameters = {"input_prefix": "none/", "generator": GENERATOR, "trajectory": trajectory, "overrides": overrides}
        run_scene_batch(limit=2, **parameters)  # warm-up: Prefect's client, the Ray pools and stage workers
        db_before, runs_before = _prefect_db_bytes(), _task_runs()
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        rows, batch_s = _timed(lambda: run_scene_batch(limit=run, **parameters))
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
        ran = len(rows)
        flow_cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
        return {"scenes": scenes, "run": ran, "store_filesystem": filesystem_of(root), "done": sum(r["status"] == "done" for r in rows),
                "scan_s": scan_s, "register_s": register_s, "select_s": select_s, "selected": selected.num_rows,
                "get_ms": get_ms,
                "compact_s": compact_s, "compacted_updates": folded, "batch_s": batch_s,
                "flow_cpu_s_per_scene": flow_cpu / ran,
                "flow_peak_rss_mb": cpu_after.ru_maxrss / 1024,
                "prefect_db_bytes_per_scene": (_prefect_db_bytes() - db_before) / ran,
                "task_runs_per_scene": (_task_runs() - runs_before) / ran}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def extrapolate(points: list[dict], to: int = EXTRAPOLATE_TO) -> dict:
    """The figures at ``to`` scenes: per-scene figures from the largest N (they do not grow with N), catalog-wide
    ones scaled linearly from it, totals multiplied out."""
    largest = max(points, key=lambda p: p["scenes"])
    factor = to / largest["scenes"]
    catalog_s = {name: largest[name] * factor for name in ("register_s", "select_s", "compact_s")}
    return {"scenes": to, **catalog_s, "catalog_total_s": sum(catalog_s.values()),
            "scan_s": largest["scan_s"] * factor,
            "flow_cpu_s_per_scene": largest["flow_cpu_s_per_scene"],
            "flow_cpu_h": largest["flow_cpu_s_per_scene"] * to / 3600,
            "prefect_db_gb": largest["prefect_db_bytes_per_scene"] * to / 1e9,
            "task_runs": largest["task_runs_per_scene"] * to,
            "flow_peak_rss_mb": largest["flow_peak_rss_mb"]}


def run_catalog_benchmark(scenes: tuple[int, ...] = (1000, 10000), run: int = 200, root: str | None = None) -> dict:
    """Every catalog size in a process of its own, with its own Prefect home (database) and API; the local store
    under ``root`` (default: the system's temporary directory)."""
    points = []
    for count in scenes:
        with tempfile.TemporaryDirectory(prefix="prefect-home-") as home:
            env = os.environ | {"PREFECT_HOME": home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
            env.pop("PREFECT_API_URL", None)
            out = subprocess.run([sys.executable, "-m", "flows.bench_catalog", str(count), str(run), root or ""], env=env,
                                 capture_output=True, text=True)
            if out.returncode:
                raise RuntimeError(f"catalog benchmark at {count} scenes failed:\n{out.stderr[-4000:]}")
            points.append(json.loads(out.stdout.strip().splitlines()[-1]))
    small, large = min(points, key=lambda p: p["scenes"]), max(points, key=lambda p: p["scenes"])
    growth = large["flow_cpu_s_per_scene"] / small["flow_cpu_s_per_scene"]
    return {"points": points, "flow_cpu_growth": growth, "extrapolated_100k": extrapolate(points),
            "cpu_count": os.cpu_count()}


def format_report(result: dict) -> str:
    """Human-readable summary of :func:`run_catalog_benchmark`."""
    lines = [f"{result['cpu_count']} CPU cores; the local store on {result['points'][0]['store_filesystem']}; "
             "per-scene figures over each batch's scenes",
             "scenes  scan s  register s  select s  get ms  compact s (updates)  ran  flow CPU s/scene  peak RSS MB  "
             "DB kB/scene  task runs/scene"]
    for p in result["points"]:
        lines.append(f"{p['scenes']:>6}  {p['scan_s']:>6.2f}  {p['register_s']:>10.2f}  {p['select_s']:>8.3f}  "
                     f"{p['get_ms']:>6.1f}  "
                     f"{p['compact_s']:>9.2f} ({p['compacted_updates']:>6})  {p['run']:>3}  "
                     f"{p['flow_cpu_s_per_scene']:>16.4f}  {p['flow_peak_rss_mb']:>11.0f}  "
                     f"{p['prefect_db_bytes_per_scene'] / 1e3:>11.1f}  {p['task_runs_per_scene']:>15.2f}")
    x = result["extrapolated_100k"]
    lines.append(f"flow CPU per scene at the largest N / the smallest: {result['flow_cpu_growth']:.2f}")
    lines.append(f"extrapolated to {x['scenes']}: register + select + compact {x['catalog_total_s']:.0f} s "
                 f"({x['register_s']:.0f} + {x['select_s']:.1f} + {x['compact_s']:.0f}), reading the inputs "
                 f"{x['scan_s']:.0f} s; flow CPU "
                 f"{x['flow_cpu_s_per_scene']:.3f} s/scene ({x['flow_cpu_h']:.1f} h); Prefect database "
                 f"{x['prefect_db_gb']:.2f} GB; {x['task_runs']:.0f} task runs; flow peak RSS "
                 f"{x['flow_peak_rss_mb']:.0f} MB")
    return "\n".join(lines)


def _main(scenes: int, run: int, root_dir: str | None) -> None:
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = SubprocessASGIServer()
    server.start(timeout=600)
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            print(json.dumps(run_point(scenes, run, root_dir)))
    finally:
        server.stop()


if __name__ == "__main__":
    _main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] or None)
