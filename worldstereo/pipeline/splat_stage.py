"""The splat stage: 3D Gaussians initialised from the fused cloud and trained on the scene's memory-bank
frames, written as ``exports/splats.ply``, ``exports/mesh.ply`` (TSDF of their depth), a render and their
scores at the held-out frames beside the cloud's."""

from __future__ import annotations

import json
import time

import numpy as np
import torch
from torch import Tensor

from worldstereo.errors import PermanentError
from worldstereo.evaluation.image_metrics import psnr, ssim
from worldstereo.memory.cache import Cache3D
from worldstereo.pipeline.scene import INIT, SPLAT, SceneContext, StageResult
from worldstereo.png import encode_png, quantize
from worldstereo.splat.gaussians import from_cloud
from worldstereo.splat.mesh import mesh_ply, tsdf_mesh
from worldstereo.splat.ply import splats_ply
from worldstereo.splat.trainer import render_views, train_splats
from worldstereo.splat.views import View, scene_views, split_views

MIN_POINTS = 16
SPLAT_FILES = ("splats.ply", "mesh.ply", "splat_render.png", "splat.json")


def check_cloud(cache: Cache3D) -> None:
    """A cloud the splats can start from: at least ``MIN_POINTS`` finite points (distinct voxels), else a
    ``PermanentError``."""
    count = int(torch.isfinite(cache.points).all(1).sum())
    if count < MIN_POINTS:
        raise PermanentError(f"splat: the fused cloud is empty or degenerate ({count} distinct finite points, "
                             f"at least {MIN_POINTS} are needed)")


def scene_box(points: Tensor) -> tuple[Tensor, Tensor]:
    """Corners of the box holding the middle 96% of the points along each axis."""
    low, high = torch.quantile(points.float(), torch.tensor([0.02, 0.98], device=points.device), dim=0)
    return low, high


def _sample(count: int, limit: int, seed: int) -> Tensor:
    if count <= limit:
        return torch.arange(count)
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:limit]


def held_out_scores(renders: list[Tensor], views: list[View], cache: Cache3D, background: Tensor
                    ) -> dict[str, float]:
    """Mean PSNR / SSIM of the splats and of the fused cloud (point render over the same ``background`` as
    the splats) at the held-out views."""
    if not views:
        return {}
    splat_psnr, splat_ssim, cloud_psnr, cloud_ssim = [], [], [], []
    for rgb, view in zip(renders, views):
        points = cache.render(view.camera.to(cache.points.device, torch.float32))
        cloud = torch.where(points.mask[0, ..., None], background.to(points.rgb.device), points.rgb[0].float())
        cloud = cloud.to(view.image)
        splat_psnr.append(float(psnr(rgb, view.image)))
        splat_ssim.append(float(ssim(rgb, view.image)))
        cloud_psnr.append(float(psnr(cloud, view.image)))
        cloud_ssim.append(float(ssim(cloud, view.image)))
    return {"held_out_views": float(len(views)), "splat_psnr": float(np.mean(splat_psnr)),
            "splat_ssim": float(np.mean(splat_ssim)), "cloud_psnr": float(np.mean(cloud_psnr)),
            "cloud_ssim": float(np.mean(cloud_ssim))}


def run_splat(ctx: SceneContext, names: list[str]) -> StageResult:
    """Train the splats from the last trajectory's snapshot and write them, the mesh, a render and the scores
    (with ``splat.enabled`` off: a record with no outputs)."""
    started = time.perf_counter()
    settings = ctx.settings.splat
    if not settings.enabled:
        result = StageResult((), {"enabled": 0.0})
        ctx.finish(SPLAT, None, started, result)
        return result
    state = ctx.states.load(names[-1] if names else INIT)
    device = ctx.settings.resolved_device()
    check_cloud(state.cache)
    cache = state.cache.to(device)
    train, held = split_views(scene_views(state.bank, cache, settings.resolution_scale, device),
                              settings.held_out_stride)
    if len(train) < settings.min_frames:
        raise PermanentError(f"splat: {len(train)} training frames, at least {settings.min_frames} are needed "
                             "(splat.min_frames)")
    finite = torch.isfinite(cache.points).all(1).nonzero().squeeze(1)
    pick = finite[_sample(len(finite), settings.max_init_points, ctx.settings.seed).to(finite.device)]
    points, colors = cache.points[pick], cache.colors[pick].float()
    low, high = scene_box(points)
    extent = max(float((high - low).norm()), 1e-6)
    params = from_cloud(points, colors, settings.sh_degree)
    report = train_splats(params, train, settings, extent, seed=ctx.settings.seed, backend=settings.backend)
    renders = render_views(params, train + held, settings.sh_degree, report.background, backend=settings.backend)
    scores = held_out_scores([r[0] for r in renders[len(train):]], held, cache, report.background)
    mesh = tsdf_mesh(renders, [v.camera for v in train + held], low, high, settings.mesh_voxels,
                     settings.mesh_max_triangles)
    metrics = {"gaussians": float(report.gaussians), "iterations": float(report.iterations),
               "train_s": report.seconds, "loss": report.loss, "train_views": float(len(train)),
               **{f"background_{c}": float(v) for c, v in zip("rgb", report.background)},
               "mesh_triangles": float(len(mesh.triangles)), **scores}
    files = {"splats.ply": splats_ply(params), "mesh.ply": mesh_ply(mesh),
             "splat_render.png": encode_png(quantize(renders[0][0].cpu())),
             "splat.json": json.dumps(metrics, indent=2).encode()}
    keys = [ctx.states.key("exports", name) for name in SPLAT_FILES]
    for key, name in zip(keys, SPLAT_FILES):
        ctx.store.put_bytes(ctx.bucket, key, files[name])
    result = StageResult(tuple(keys), metrics)
    ctx.finish(SPLAT, None, started, result)
    return result
