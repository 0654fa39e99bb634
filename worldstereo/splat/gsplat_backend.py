"""The one module that imports gsplat: its CUDA rasterizer and its densification strategy."""

from __future__ import annotations

from torch import Tensor

from worldstereo.errors import ConfigurationError


def rasterize_gsplat(params: dict[str, Tensor], viewmat: Tensor, K: Tensor, width: int, height: int,
                     sh_degree: int, background: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, dict]:
    """gsplat's CUDA rasterization of one camera: colour ``[H,W,3]``, accumulated depth ``[H,W]``, alpha, info."""
    import torch

    try:
        from gsplat import rasterization

        colors = torch.cat([params["sh0"], params["shN"]], 1)
        renders, alphas, info = rasterization(
            params["means"], torch.nn.functional.normalize(params["quats"], dim=-1), torch.exp(params["scales"]),
            torch.sigmoid(params["opacities"]), colors, viewmat[None], K[None], width, height, sh_degree=sh_degree,
            render_mode="RGB+D", backgrounds=None if background is None else background[None], packed=False)
    except (ImportError, RuntimeError, OSError) as exc:  # the kernels compile on first use and may not
        if "out of memory" in str(exc):
            raise
        raise ConfigurationError(f"gsplat cannot rasterize on this node: {exc}") from exc
    rgbd = renders[0]
    return rgbd[..., :3], rgbd[..., 3], alphas[0, ..., 0], info


def default_strategy(iterations: int, verbose: bool = False):
    """gsplat's 3DGS densification (clone, split, prune), its schedule stretched to ``iterations``."""
    from gsplat.strategy import DefaultStrategy

    every = max(10, iterations // 20)
    return DefaultStrategy(refine_start_iter=max(every, iterations // 10), refine_stop_iter=int(iterations * 0.7),
                           refine_every=every, reset_every=3000 if iterations > 6000 else iterations + 1,
                           verbose=verbose)
