"""The release's final reconstruction: the configured reconstructor run once over every memory-bank frame with its
camera, each frame's depth fitted to the 3D cache's depth rendered into that frame (a robust affine fit in inverse
depth), back-projected through the bank's cameras and thinned at the cache's voxel size.

With the ``rendered-depth`` reconstructor the frames' depth is the cache's render itself, so the fit is the identity
and the cloud re-samples the cache from the bank's viewpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from worldstereo.geometry.far_depth import compress_far
from worldstereo.geometry.render import CacheRender, depth_edge_mask
from worldstereo.geometry.voxel import voxel_downsample
from worldstereo.pipeline.backends import GeneratedVideo, GenerationRequest, Reconstruction, References
from worldstereo.pipeline.scene import ReconstructFn

GLOBAL = "global"
HYPOTHESES = 256  # two-pixel affine fits tried per frame
SAMPLE = 4096  # pixels per frame the hypotheses are scored on
INLIER_SHARE = 0.05  # residual bound, x the frame's median target inverse depth
MIN_PIXELS = 16  # pixels with both depths below which a frame keeps its own depth


@dataclass(frozen=True)
class InverseDepthFit:
    """Per frame ``[N]``: ``1/d_cache ≈ scale / d + shift``, the inlier share of the sampled pixels, fitted or not."""

    scale: Tensor
    shift: Tensor
    inliers: Tensor
    fitted: Tensor


def fit_inverse_depth(depth: Tensor, target: Tensor, valid: Tensor, *, seed: int = 0) -> InverseDepthFit:
    """Robust affine fit of ``1/target`` on ``1/depth`` per frame ``[N,H,W]`` over ``valid`` pixels (RANSAC over
    two-pixel hypotheses, then least squares on the best one's inliers)."""
    n = len(depth)
    generator = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, SAMPLE, dtype=torch.float64, device=depth.device)
    y, used = torch.zeros_like(x), torch.zeros(n, SAMPLE, dtype=torch.bool, device=depth.device)
    for frame in range(n):  # an even spread of each frame's valid pixels
        pixels = valid[frame].flatten().nonzero()[:, 0]
        pick = pixels[torch.linspace(0, len(pixels) - 1, min(len(pixels), SAMPLE), device=pixels.device).round().long()]
        x[frame, : len(pick)] = 1 / depth[frame].flatten()[pick].double()
        y[frame, : len(pick)] = 1 / target[frame].flatten()[pick].double()
        used[frame, : len(pick)] = len(pixels) >= MIN_PIXELS
    count = used.sum(dim=1).clamp_min(1)
    pairs = (torch.rand(n, HYPOTHESES, 2, generator=generator) * count[:, None, None].cpu()).long().to(x.device)
    xs, ys = x.gather(1, pairs.flatten(1)).view_as(pairs), y.gather(1, pairs.flatten(1)).view_as(pairs)
    slope = (ys[..., 0] - ys[..., 1]) / (xs[..., 0] - xs[..., 1])
    offset = ys[..., 0] - slope * xs[..., 0]
    bound = INLIER_SHARE * y.masked_fill(~used, float("nan")).nanmedian(dim=1).values
    residual = (slope[..., None] * x[:, None] + offset[..., None] - y[:, None]).abs()  # [N,K,S]
    inlier = (residual <= bound[:, None, None]) & used[:, None] & torch.isfinite(slope)[..., None]
    best = inlier.sum(dim=2).argmax(dim=1)
    keep = inlier[torch.arange(n, device=x.device), best]
    scale, shift = _least_squares(x, y, keep)  # 1/d_cache = a/d + b
    fitted = used.any(dim=1) & (keep.sum(dim=1) >= MIN_PIXELS) & torch.isfinite(scale) & (scale > 0)
    one, zero = torch.ones_like(scale), torch.zeros_like(shift)
    return InverseDepthFit(torch.where(fitted, scale, one), torch.where(fitted, shift, zero),
                           keep.sum(dim=1) / count, fitted)


def _least_squares(x: Tensor, y: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """Per row, the line ``y = a x + b`` fitted to the kept samples."""
    w = keep.double()
    total = w.sum(dim=1).clamp_min(1)
    mx, my = (w * x).sum(dim=1) / total, (w * y).sum(dim=1) / total
    slope = (w * (x - mx[:, None]) * (y - my[:, None])).sum(dim=1) / (w * (x - mx[:, None]).square()).sum(dim=1)
    return slope, my - slope * mx


@dataclass(frozen=True)
class GlobalCloud:
    """The global reconstruction's cloud and how its frames were fitted."""

    points: Tensor  # [P,3]
    colors: Tensor  # [P,3]
    frames: int
    fitted_frames: int
    inlier_share: float  # median over frames


def global_cloud(state, reconstruct_fn: ReconstructFn, scene_id: str, *, far_depth_ratio: float | None,
                 splat_radius: int = 1, seed: int = 0) -> GlobalCloud:
    """Run ``reconstruct_fn`` over every bank frame of ``state`` and fit its depth to the cache (module docstring)."""
    cameras = state.bank.cameras().to(dtype=torch.float32)
    images = torch.stack([_resized(f.image, cameras.height, cameras.width) for f in state.bank.frames])
    render = state.cache.render(cameras.to(state.cache.points.device), radius=splat_radius)
    render = CacheRender(render.rgb.cpu(), render.depth.cpu(), render.mask.cpu())
    cached = torch.where(render.mask, 0.0, render.depth).to(torch.float32)
    references = References(torch.zeros(0, dtype=torch.long), images[:0], cameras[:1], torch.zeros(0),
                            torch.zeros(0, dtype=torch.long), None, None)
    request = GenerationRequest(scene_id, GLOBAL, images[0], cameras, render, references, seed=seed)
    recon = reconstruct_fn(GeneratedVideo(images, depth=cached), request)
    height, width = recon.colors.shape[1:3]
    grid = cameras.resized(height, width).to(dtype=torch.float64)
    depth, valid = _depth_of(recon)
    target = F.interpolate(cached[:, None], size=(height, width), mode="nearest")[:, 0].double()
    both = valid & (target > 0) & ~depth_edge_mask(target)
    fit = fit_inverse_depth(depth, target, both, seed=seed)
    inverse = fit.scale[:, None, None] / depth + fit.shift[:, None, None]
    fitted = torch.where(valid & (inverse > 0), 1 / inverse, torch.inf)
    fitted = compress_far(fitted, far_depth_ratio)
    keep = torch.isfinite(fitted) & ~depth_edge_mask(fitted)
    points = grid.backproject(torch.where(keep, fitted, 0.0))[keep]
    colors = recon.colors.to(points.device)[keep].float()
    points, colors, _ = voxel_downsample(points, colors, state.cache.voxel_size)
    return GlobalCloud(points, colors, len(images), int(fit.fitted.sum()), float(fit.inliers.median()))


def _depth_of(recon: Reconstruction) -> tuple[Tensor, Tensor]:
    """z-depth ``[N,h,w]`` of a reconstruction in its own cameras (any frame and scale), and where it is valid."""
    valid = recon.frame_valid()
    if recon.depth is not None:
        depth = recon.depth.double()
    else:
        cameras = recon.cameras.to(dtype=torch.float64)
        offsets = recon.points.double() - cameras.centers[:, None, None]
        depth = (offsets * cameras.forward[:, None, None]).sum(dim=-1)
    return torch.where(valid & (depth > 0), depth, torch.inf), valid & (depth > 0)


def _resized(image: Tensor, height: int, width: int) -> Tensor:
    if image.shape[:2] == (height, width):
        return image.float()
    batch = F.interpolate(image.permute(2, 0, 1)[None].float(), size=(height, width), mode="bilinear",
                          antialias=True, align_corners=False)
    return batch[0].permute(1, 2, 0).clamp(0, 1)
