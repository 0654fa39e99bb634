"""3D cache rendering benchmark: the vectorised renderer against the per-frame numpy z-buffer.

The scene is what the pipeline renders: a cloud back-projected (raster order, float32 colours) from a
reference view of a room (back wall, floor, a sphere) and an orbit of cameras around it (radius
0.3 x median depth, looking at the scene centre), so about 95% of the points are in view in every
frame and no culling helps.
"""

from __future__ import annotations

import math
import statistics
import time

import torch
from torch import Tensor

from worldstereo.geometry.camera import Camera, look_at
from worldstereo.geometry.render import render_points, render_points_naive

FOV_X_DEG = 60.0


def run_render_benchmark(
    num_points: int = 1_000_000,
    num_frames: int = 81,
    height: int = 480,
    width: int = 768,
    device: str = "cpu",
    repeats: int = 3,
    radius: int = 1,
    baseline_frames: int = 4,
) -> dict:
    """Time :func:`render_points` on ``num_points x num_frames`` and the naive baseline on the same scene.

    The baseline runs on ``baseline_frames`` frames spread over the trajectory; its per-frame time is
    extrapolated to all frames when that is fewer than ``num_frames``. Throughputs are in
    point·frames per second; ``agreement`` is the share of pixels of the timed baseline frames where
    both renderers agree on coverage and on depth (0.01%); which of two points at equal float32
    depth wins may differ.
    """
    points, colors, cameras = benchmark_scene(num_points, num_frames, height, width, device=device)
    sync = torch.cuda.synchronize if cameras.device.type == "cuda" else (lambda: None)

    render_points(points, colors, cameras, radius=radius)  # warm-up
    seconds = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fast = render_points(points, colors, cameras, radius=radius)
        sync()
        seconds.append(time.perf_counter() - start)
    elapsed = statistics.median(seconds)

    timed = torch.linspace(0, num_frames - 1, min(baseline_frames, num_frames)).round().long().unique()
    subset = cameras[timed.to(cameras.device)]
    start = time.perf_counter()
    naive = render_points_naive(points, colors, subset, radius=radius)
    baseline_per_frame = (time.perf_counter() - start) / len(timed)

    mask, depth = fast.mask[timed].cpu(), fast.depth[timed].cpu()
    agreement = ((mask == naive.mask) & torch.isclose(depth, naive.depth, rtol=1e-4)).float().mean()
    throughput = num_points * num_frames / elapsed
    baseline_throughput = num_points / baseline_per_frame
    return {
        "device": str(cameras.device),
        "torch_threads": torch.get_num_threads(),
        "num_points": num_points,
        "num_frames": num_frames,
        "height": height,
        "width": width,
        "radius": radius,
        "seconds": elapsed,
        "seconds_all": seconds,
        "throughput": throughput,
        "baseline_frames": len(timed),
        "baseline_extrapolated": len(timed) < num_frames,
        "baseline_seconds": baseline_per_frame * num_frames,
        "baseline_throughput": baseline_throughput,
        "speedup": throughput / baseline_throughput,
        "coverage": float(fast.covered.float().mean()),
        "agreement": float(agreement),
    }


def format_report(result: dict) -> str:
    """Human-readable summary of :func:`run_render_benchmark`."""
    extrapolated = (
        f" (timed on {result['baseline_frames']} frames, extrapolated to {result['num_frames']})"
        if result["baseline_extrapolated"]
        else ""
    )
    return "\n".join(
        [
            f"3D cache render: {result['num_points']:,} points x {result['num_frames']} frames at "
            f"{result['height']}x{result['width']}, splat radius {result['radius']}",
            f"device {result['device']}, torch threads {result['torch_threads']}",
            f"render_points : {result['seconds']:.3f} s  -> {result['throughput'] / 1e6:,.1f} M point·frames/s",
            f"numpy baseline: {result['baseline_seconds']:.3f} s{extrapolated}"
            f"  -> {result['baseline_throughput'] / 1e6:,.1f} M point·frames/s",
            f"speedup {result['speedup']:.1f}x, coverage {result['coverage']:.1%}, "
            f"agreement with the baseline {result['agreement']:.4%}",
        ]
    )


def benchmark_scene(
    num_points: int, num_frames: int, height: int, width: int, *, device: str | torch.device = "cpu"
) -> tuple[Tensor, Tensor, Camera]:
    """Points ``[P,3]``, colours ``[P,3]`` in [0,1] and an orbit of ``num_frames`` cameras."""
    reference = Camera.from_fov(torch.eye(4, dtype=torch.float64), height, width, FOV_X_DEG)
    grid_w = math.ceil(math.sqrt(num_points * width / height))
    grid_h = math.ceil(num_points / grid_w)
    sampler = reference.resized(grid_h, grid_w)
    rays = sampler.ray_directions()[0].reshape(-1, 3)[:num_points]
    depth = _room_depth(rays)
    points = rays * depth[:, None]
    colors = torch.stack([points[:, 0].sin() * 0.5 + 0.5, points[:, 1].cos() * 0.5 + 0.5, 1 / depth], dim=-1)

    median = float(depth.median())
    angles = torch.linspace(0, 2 * math.pi, num_frames + 1, dtype=torch.float64)[:-1]
    radius = 0.3 * median
    eyes = torch.stack([radius * (angles.cos() - 1), radius * angles.sin(), torch.zeros_like(angles)], dim=-1)
    target = torch.tensor([0.0, 0.0, median], dtype=torch.float64)
    up = torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64)
    cameras = Camera.from_fov(look_at(eyes, target.expand_as(eyes), up.expand_as(eyes)), height, width, FOV_X_DEG)
    return points.float().to(device), colors.float().to(device), cameras.to(device=device)


def _room_depth(rays: Tensor) -> Tensor:
    """z-depth along camera rays (unit z) of a back wall at z=6, a floor at y=1.2 and a sphere."""
    wall = torch.full_like(rays[:, 2], 6.0)
    floor = torch.where(rays[:, 1] > 1e-9, 1.2 / rays[:, 1].clamp_min(1e-9), math.inf)
    center = torch.tensor([0.6, 0.2, 3.5], dtype=rays.dtype)
    a = (rays * rays).sum(-1)
    b = (rays @ center) * -2
    c = center.dot(center) - 0.9**2
    disc = b * b - 4 * a * c
    sphere = torch.where(disc > 0, (-b - disc.clamp_min(0).sqrt()) / (2 * a), math.inf)
    return torch.minimum(torch.minimum(wall, floor), sphere)
