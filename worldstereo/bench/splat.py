"""Splat training benchmark: the synthetic room seen from ``frames`` cameras on a circle around its input view
(exact renders and depth), Gaussians from the back-projected views, the trainer timed on one device."""

from __future__ import annotations

import math
import resource
import time

import torch

from worldstereo.config import SplatSettings
from worldstereo.geometry.camera import Camera, look_at
from worldstereo.memory.cache import Cache3D
from worldstereo.splat.gaussians import from_cloud
from worldstereo.splat.trainer import train_splats
from worldstereo.splat.views import View
from worldstereo.synthetic import make_scene
from worldstereo.geometry.spherical import WORLD_UP


def room_views(frames: int, scale: float, device: str) -> tuple[list[View], Cache3D]:
    """``frames`` views of the synthetic room at ``scale`` of 480x832 and the cloud of their depth."""
    scene = make_scene("room")
    height, width = max(16, round(480 * scale / 8) * 8), max(16, round(832 * scale / 8) * 8)
    start = scene.input_camera(height, width)
    eye, target = start.centers[0], torch.tensor(scene.target, dtype=torch.float64)
    radius = 0.15 * float((target - eye).norm())
    angles = torch.arange(frames, dtype=torch.float64) * 2 * math.pi / frames
    right, up = start.c2w[0, :3, 0], -start.c2w[0, :3, 1]
    eyes = eye + radius * (angles.cos()[:, None] * right + angles.sin()[:, None] * up)
    c2w = look_at(eyes, target.expand_as(eyes), torch.tensor(WORLD_UP, dtype=torch.float64).expand_as(eyes))
    cameras = Camera(start.K.expand(frames, 3, 3), c2w, height, width)
    rendered = scene.render(cameras)
    depth = torch.where(torch.isfinite(rendered.depth), rendered.depth, 0.0)
    points = cameras.backproject(depth)[depth > 0].float()
    colors = rendered.rgb[depth > 0]
    cache = Cache3D.from_points(points, colors, voxel_size=0.002 * float(depth[depth > 0].median()))
    views = [View(f"v{i}", rendered.rgb[i].to(device), depth[i].float().to(device), cameras[i].to(device))
             for i in range(frames)]
    return views, cache.to(device)


def run_splat_benchmark(frames: int = 21, scale: float = 0.5, device: str = "cpu", iterations: int | None = None,
                        settings: SplatSettings | None = None) -> dict:
    """Iterations per second, seconds per scene at the default iterations (setup + training) and peak memory."""
    settings = settings or SplatSettings()
    timed = settings.model_copy(update={"iterations": iterations or settings.iterations})
    started = time.perf_counter()
    views, cache = room_views(frames, scale, device)
    pick = torch.randperm(len(cache), generator=torch.Generator().manual_seed(0))[:settings.max_init_points]
    params = from_cloud(cache.points[pick], cache.colors[pick].float(), settings.sh_degree)
    setup_s = time.perf_counter() - started
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    report = train_splats(params, views, timed, scene_scale=make_scene("room").extent / 2, backend=settings.backend)
    rate = report.iterations / report.seconds
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"frames": frames, "scale": scale, "height": views[0].camera.height, "width": views[0].camera.width,
            "device": device, "iterations": report.iterations, "iterations_per_s": rate,
            "default_iterations": settings.iterations, "setup_s": setup_s,
            "seconds_per_scene": setup_s + settings.iterations / rate, "gaussians": report.gaussians,
            "initial_gaussians": len(pick), "peak_memory_bytes": int(peak)}


def format_report(result: dict) -> str:
    return (f"splat training, {result['frames']} frames at {result['height']}x{result['width']} on {result['device']}: "
            f"{result['iterations_per_s']:.2f} it/s over {result['iterations']} iterations, "
            f"{result['seconds_per_scene']:.1f} s per scene at {result['default_iterations']} iterations "
            f"({result['initial_gaussians']} -> {result['gaussians']} Gaussians), "
            f"peak memory {result['peak_memory_bytes'] / 2**20:.0f} MiB")
