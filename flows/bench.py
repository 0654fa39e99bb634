"""Orchestration overhead: one scene through the ``scene-batch`` flow (Prefect tasks, Ray actor pools) against
the direct library call (``worldstereo.pipeline.local.process_scene``) with the same settings.

Each side writes into a fresh local store of its own. The Prefect API, the Ray cluster, the long-lived model
actors and stage workers, and Prefect's client in this process are started before either is timed (each start-up
is reported apart); the direct call sets up its backends in-process within its time. Prefect's client starts with
a first, empty batch: what a process pays once, on its first flow run (the API client, the log and event services,
the fresh API's first write of each kind), whatever the number of batches and scenes after it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from worldstereo.config import Settings
from worldstereo.errors import InvalidInputError
from worldstereo.inputs import sidecar_keys
from worldstereo.storage.factory import open_store
from worldstereo.storage.keys import output_key, scene_id_from_key
from worldstereo.synthetic.samples import SAMPLES, write_samples

INPUT_PREFIX = "bench/"


def _upload(settings: Settings, sample_dir: Path, name: str) -> str:
    """The sample's image and sidecars in the settings' input bucket; returns the image key."""
    store, key = open_store(settings.storage), f"{INPUT_PREFIX}{name}.png"
    for object_key in (*sidecar_keys(key), key):
        store.put_bytes(settings.storage.input_bucket, object_key, (sample_dir / Path(object_key).name).read_bytes())
    return key


def _start_prefect_api() -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.hello()


def run_orchestration_benchmark(sample: str = "room", frames: int = 9, scale: float = 0.25,
                                generator: str = "oracle") -> dict:
    """Time the same scene through the flow and as a direct call; ``ratio`` is flow / direct."""
    from flows.scene_batch import batch_settings, run_scene_batch
    from tasks.ray_pools import ensure_ray, warm_up
    from worldstereo.pipeline.local import process_scene, read_input

    if sample not in dict(SAMPLES):
        raise InvalidInputError(f"unknown sample {sample!r}; choose one of {', '.join(dict(SAMPLES))}")
    trajectory = {"num_frames": frames}
    with tempfile.TemporaryDirectory() as tmp:
        write_samples(Path(tmp) / "samples")

        def overrides(name: str) -> dict:
            return {"resolution_scale": scale, "storage": {"backend": "local", "root": str(Path(tmp) / name)}}

        direct = batch_settings(generator, trajectory=trajectory, overrides=overrides("direct"))
        flow_settings = batch_settings(generator, trajectory=trajectory, overrides=overrides("flow"))
        keys = [_upload(s, Path(tmp) / "samples", sample) for s in (direct, flow_settings)]
        scene_id = scene_id_from_key(keys[0])

        started = time.perf_counter()
        _start_prefect_api()
        api_start_s = time.perf_counter() - started
        started = time.perf_counter()
        ensure_ray(flow_settings.ray)
        ray_start_s = time.perf_counter() - started
        started = time.perf_counter()
        warm_up(flow_settings)  # long-lived: the model actors and the stage workers serve every later scene
        pools_start_s = time.perf_counter() - started
        started = time.perf_counter()
        run_scene_batch(input_prefix="empty/", generator=generator, trajectory=trajectory,
                        overrides=overrides("flow"))  # no input there: Prefect's client starts, no scene runs
        first_batch_s = time.perf_counter() - started

        started = time.perf_counter()
        store = open_store(direct.storage)
        process_scene(store, scene_id, read_input(store, direct.storage.input_bucket, keys[0], direct), direct)
        direct_s = time.perf_counter() - started

        started = time.perf_counter()
        rows = run_scene_batch(input_prefix=keys[1], generator=generator, trajectory=trajectory,
                               overrides=overrides("flow"))
        flow_s = time.perf_counter() - started
        if [row["status"] for row in rows] != ["done"]:
            raise RuntimeError(f"the flow did not finish the scene: {rows}")

        fused = output_key(scene_id, "exports", "fused.ply")
        flow_cloud = open_store(flow_settings.storage).get_bytes(flow_settings.storage.work_bucket, fused)
        identical = flow_cloud == store.get_bytes(direct.storage.work_bucket, fused)
    return {"sample": sample, "frames": frames, "scale": scale, "generator": generator, "flow_s": flow_s,
            "direct_s": direct_s, "ratio": flow_s / direct_s, "overhead_s": flow_s - direct_s,
            "api_start_s": api_start_s, "ray_start_s": ray_start_s, "pools_start_s": pools_start_s,
            "first_batch_s": first_batch_s,
            "identical_outputs": identical}


def format_report(result: dict) -> str:
    """Human-readable summary of :func:`run_orchestration_benchmark`."""
    return "\n".join([
        f"one {result['sample']} scene, {result['frames']} frames per trajectory at scale {result['scale']}, "
        f"generator {result['generator']}",
        f"direct library call: {result['direct_s']:.2f} s",
        f"scene-batch flow   : {result['flow_s']:.2f} s  (not included: Prefect API start {result['api_start_s']:.1f} s, "
        f"Ray start {result['ray_start_s']:.1f} s, model actors and stage workers start {result['pools_start_s']:.1f} s, "
        f"a first, empty batch {result['first_batch_s']:.1f} s)",
        f"flow / direct {result['ratio']:.2f}x, overhead {result['overhead_s']:+.2f} s, "
        f"fused clouds {'identical' if result['identical_outputs'] else 'DIFFERENT'}",
    ])
