"""Cost of the pipeline around the model: one synthetic scene through every stage with a zero-cost generator.

Path ``oracle``: the generator returns the GGM condition itself (colour and depth of the rendered 3D cache;
holes have no depth), so each trajectory pays everything but the model: GGM render, retrieval, pointmaps,
reconstruction (back-projection), cache and memory-bank updates, video encodes and snapshots. Path
``release``: what a run of the released model pays (``worldstereo.bench.release_path``): 21-keyframe clips, the
release memory rules, the released generator's pre-processing around a zero-cost stand-in, and the
``depth-anything-3`` reconstructor with a tiny network whose calls are reported apart.
The scene is the bundled synthetic room rendered at the working size, so figures repeat run to run.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Literal

import torch

from worldstereo.bench.release_path import NetworkClock, release_generator, release_reconstructor
from worldstereo.config import MemorySettings, Settings, StorageSettings, TrajectorySettings
from worldstereo.inputs import SceneInput
from worldstereo.pipeline import scene as stages
from worldstereo.pipeline.backends import GeneratedVideo, GenerationRequest
from worldstereo.pipeline.depth.sidecar import SidecarDepth
from worldstereo.pipeline.exports import run_export
from worldstereo.pipeline.reconstructors.rendered_depth import RenderedDepthReconstructor
from worldstereo.pipeline.registry import backend_class
from worldstereo.pipeline.timing import collect_steps
from worldstereo.storage.factory import open_store
from worldstereo.synthetic import make_scene

STEPS = ("snapshot_load", "ggm_render", "retrieval", "pointmaps", "generate", "reconstruct",
         "cache_update", "bank_update", "plan", "video_encode", "snapshot_save")


def ggm_generator(request: GenerationRequest) -> GeneratedVideo:
    """The zero-cost generator: the GGM render as the video, its depth (holes: none) as the geometry."""
    ggm = request.ggm
    return GeneratedVideo(frames=ggm.rgb, depth=torch.where(ggm.mask, torch.inf, ggm.depth))


def benchmark_input(settings: Settings, seed: int = 0) -> SceneInput:
    """The synthetic room rendered at the working size, with its exact depth and camera."""
    height, width = stages.working_size(settings, 480, 768)
    scene = make_scene("room", seed)
    camera = scene.input_camera(height, width)
    views = scene.render(camera)
    return SceneInput("perspective", views.rgb[0].float(), views.depth[0].to(torch.float64), camera,
                      {"kind": "room", "seed": seed})


BenchPath = Literal["oracle", "release"]


def run_pipeline_benchmark(frames: int = 81, scale: float = 1.0, device: str = "cpu", pointmaps: bool = False,
                           repeats: int = 1, path: BenchPath = "oracle", planner: str = "presets",
                           trajectories: int | None = None) -> dict:
    """Per-trajectory step seconds, ``per_trajectory_s`` (mean, model excluded), ``export_s`` and cache sizes.

    ``path="release"`` runs the release path; its ``per_trajectory_s`` excludes only the network calls
    (``network_s``: the reconstructor's network; the generator's stand-in costs nothing), so the generator's
    pre-processing counts in ``generate``.

    The requests carry what the default generators read; ``pointmaps`` adds the SSM pointmaps that only the
    ``worldstereo-paper`` generator reads. The scene runs ``repeats`` times: the steps and ``per_trajectory_s``
    are those of the run with the median ``per_trajectory_s``, ``export_s`` the median export; ``runs`` lists
    both figures of every run.

    ``steps_mean_s`` / ``steps_mean_cpu_s`` break the mean trajectory down by step (wall / CPU seconds of this
    process); ``process_cpu_s`` is the process's CPU time over the whole benchmark, scene set-up included.

    On CUDA the scene first runs once more, unreported: that pass pays the CUDA context, kernel loading and
    allocator growth that a worker pays once, and its mean is ``cold_per_trajectory_s``.

    ``planner`` and ``trajectories`` set ``trajectory.planner`` and ``trajectory.max_trajectories``;
    ``plan_per_choice_s`` is the planner's mean wall time per trajectory it chose (at init and after each cache
    update).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if path == "release" and pointmaps:
        raise ValueError("the release path builds no pointmaps (the released generator does not read them)")
    process_cpu = time.process_time()
    generator = "worldstereo" if path == "release" else "worldstereo-paper" if pointmaps else "oracle"
    plan = TrajectorySettings(num_frames=frames, planner=planner, max_trajectories=trajectories)
    settings = Settings(device=device, trajectory=plan, resolution_scale=scale,
                        generator=generator, memory=MemorySettings(rules="release" if path == "release" else "paper"))
    cold = _run_scene(settings) if settings.resolved_device().startswith("cuda") else None
    runs = [_run_scene(settings) for _ in range(repeats)]
    result = sorted(runs, key=lambda run: run["per_trajectory_s"])[(repeats - 1) // 2]
    height, width = stages.working_size(settings, 480, 768)
    return {
        "device": settings.resolved_device(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
        "frames": frames,
        "scale": scale,
        "height": height,
        "width": width,
        "pointmaps": pointmaps,
        "path": path,
        "planner": planner,
        **result,
        "export_s": statistics.median(run["export_s"] for run in runs),
        "runs": [{key: run[key] for key in ("per_trajectory_s", "per_trajectory_cpu_s", "network_s", "export_s")}
                 for run in runs],
        "cold_per_trajectory_s": cold["per_trajectory_s"] if cold else None,
        "process_cpu_s": time.process_time() - process_cpu,
    }


def _run_scene(settings: Settings) -> dict:
    """The room through init, every trajectory and the export, in a fresh local store; timed per step."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings.model_copy(update={"storage": StorageSettings(backend="local", root=Path(tmp))})
        scene = benchmark_input(settings)
        backend_class("generator", settings.generator)  # its module is imported before the clock starts, as in a worker
        ctx = stages.SceneContext(open_store(settings.storage), settings.storage.work_bucket, "bench", settings)
        started = time.perf_counter()
        with collect_steps() as init_times:
            init = stages.run_init(ctx, scene, SidecarDepth(settings).estimate)
        init_s = time.perf_counter() - started
        names = stages.trajectory_names(ctx)
        plan_s = [init_times.wall.get("plan", 0.0) / max(1, len(names))] * len(names)  # the choices made at init
        plan_cpu_s = [init_times.cpu.get("plan", 0.0) / max(1, len(names))] * len(names)
        release = settings.generator == "worldstereo"
        clock = NetworkClock()
        if release:
            generator = release_generator(settings, Path(tmp) / "embeddings.safetensors")
            generate, clip_fn = generator.generate, generator.clip_frames
            reconstruct = release_reconstructor(settings, clock).reconstruct
        else:
            generate, clip_fn = ggm_generator, None
            reconstruct = RenderedDepthReconstructor(settings).reconstruct
        trajectories = []
        while len(trajectories) < len(names):  # the plan grows while the scene runs (planner ``explore``)
            name = names[len(trajectories)]
            network, network_cpu = clock.wall, clock.cpu
            with collect_steps() as times:
                started, cpu = time.perf_counter(), time.process_time()
                result = stages.run_trajectory(ctx, name, generate, reconstruct, names, clip_fn)
                total, total_cpu = time.perf_counter() - started, time.process_time() - cpu
            planned = stages.trajectory_names(ctx)
            plan_s += [times.wall.get("plan", 0.0)] * (len(planned) - len(names))
            plan_cpu_s += [times.cpu.get("plan", 0.0)] * (len(planned) - len(names))
            names = planned
            steps = {key: times.wall.get(key, 0.0) for key in STEPS}
            steps["other"] = total - sum(steps.values())
            steps_cpu = {key: times.cpu.get(key, 0.0) for key in STEPS}
            steps_cpu["other"] = total_cpu - sum(steps_cpu.values())
            network, network_cpu = clock.wall - network, clock.cpu - network_cpu
            model, model_cpu = (network, network_cpu) if release else (steps["generate"], steps_cpu["generate"])
            trajectories.append({"name": name, "seconds": total - model, "steps": steps,
                                 "cpu_seconds": total_cpu - model_cpu, "steps_cpu": steps_cpu,
                                 "network_s": network, "network_cpu_s": network_cpu,
                                 "clip_frames": int(result.metrics["frames"]),
                                 "cache_points": int(result.metrics["cache_points"]),
                                 "points_added": int(result.metrics["points_added"])})
        started, cpu = time.perf_counter(), time.process_time()
        run_export(ctx, names)
        export_s, export_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    return {
        "init_s": init_s,
        "init_cache_points": int(init.metrics["cache_points"]),
        "trajectories": trajectories,
        "steps_mean_s": _mean(trajectories, "steps"),
        "steps_mean_cpu_s": _mean(trajectories, "steps_cpu"),
        "per_trajectory_s": statistics.mean(t["seconds"] for t in trajectories),
        "per_trajectory_cpu_s": statistics.mean(t["cpu_seconds"] for t in trajectories),
        "network_s": statistics.mean(t["network_s"] for t in trajectories),
        "network_cpu_s": statistics.mean(t["network_cpu_s"] for t in trajectories),
        "export_s": export_s,
        "export_cpu_s": export_cpu_s,
        "plan_s": plan_s,
        "plan_per_choice_s": statistics.mean(plan_s) if plan_s else 0.0,
        "plan_per_choice_cpu_s": statistics.mean(plan_cpu_s) if plan_cpu_s else 0.0,
        "fused_points": trajectories[-1]["cache_points"] if trajectories else int(init.metrics["cache_points"]),
    }


def _mean(trajectories: list[dict], field: str) -> dict[str, float]:
    return {key: statistics.mean(t[field][key] for t in trajectories) for key in (*STEPS, "other")}


def format_report(result: dict) -> str:
    """Human-readable table of :func:`run_pipeline_benchmark`: wall seconds per step and trajectory, mean CPU."""
    names = [t["name"] for t in result["trajectories"]]
    outside = "the network calls" if result["path"] == "release" else "the model"
    lines = [
        f"pipeline without {outside} ({result['path']} path): {result['frames']} planned frames at "
        f"{result['height']}x{result['width']}, clips of {result['trajectories'][0]['clip_frames']}, "
        f"device {result['device']}, torch threads {result['torch_threads']}, load {result['load_average']:.2f}, "
        f"pointmaps {'on' if result['pointmaps'] else 'off'}",
        f"init {result['init_s']:.2f} s, cache {result['init_cache_points']:,} points",
        f"{'wall s':<14}" + "".join(f"{n:>11}" for n in names) + f"{'mean':>11}{'mean cpu':>11}",
    ]
    for key in (*STEPS, "other"):
        row = [t["steps"][key] for t in result["trajectories"]]
        lines.append(f"{key:<14}" + "".join(f"{v:11.3f}" for v in row)
                     + f"{result['steps_mean_s'][key]:11.3f}{result['steps_mean_cpu_s'][key]:11.3f}")
    if result["path"] == "release":
        lines.append(f"{'network':<14}" + "".join(f"{t['network_s']:11.3f}" for t in result["trajectories"])
                     + f"{result['network_s']:11.3f}"
                     + f"{result['network_cpu_s']:11.3f}")
    label = "total (-net)" if result["path"] == "release" else "total (-gen)"
    lines.append(f"{label:<14}" + "".join(f"{t['seconds']:11.3f}" for t in result["trajectories"])
                 + f"{result['per_trajectory_s']:11.3f}{result['per_trajectory_cpu_s']:11.3f}")
    lines.append(f"{'cache points':<14}" + "".join(f"{t['cache_points']:>11,}" for t in result["trajectories"]))
    lines.append(f"planner {result['planner']}: {result['plan_per_choice_s']:.3f} s per choice "
                 f"(cpu {result['plan_per_choice_cpu_s']:.3f}) "
                 f"({len(result['plan_s'])} choices, at init and after each cache update)")
    lines.append(f"per_trajectory_s {result['per_trajectory_s']:.3f} (cpu {result['per_trajectory_cpu_s']:.3f}), "
                 f"export_s {result['export_s']:.3f} (cpu {result['export_cpu_s']:.3f}, "
                 f"{result['fused_points']:,} fused points)")
    if len(result["runs"]) > 1:
        lines.append(f"{len(result['runs'])} runs (medians above): per_trajectory_s "
                     + " / ".join(f"{run['per_trajectory_s']:.3f}" for run in result["runs"])
                     + ", export_s " + " / ".join(f"{run['export_s']:.3f}" for run in result["runs"]))
    if result["cold_per_trajectory_s"] is not None:
        lines.append(f"first pass in this process (CUDA start-up): per_trajectory_s {result['cold_per_trajectory_s']:.3f}")
    return "\n".join(lines)
