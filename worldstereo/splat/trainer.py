"""The splat optimisation: Adam on every parameter, a view per step, gsplat's densification strategy."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from worldstereo.config import SplatSettings
from worldstereo.splat.gsplat_backend import default_strategy
from worldstereo.splat.losses import depth_loss, photometric_loss, regularisation
from worldstereo.splat.rasterize import Backend, render
from worldstereo.splat.views import View

# learning rates of gsplat's simple_trainer (means: x scene scale, decayed to 1% over the run)
LEARNING_RATES = {"means": 1.6e-4, "scales": 5e-3, "quats": 1e-3, "opacities": 5e-2, "sh0": 2.5e-3, "shN": 2.5e-3 / 20}


@dataclass(frozen=True)
class TrainReport:
    """What a training run did: ``iterations``, ``seconds``, final ``gaussians`` and the last 10 steps' mean loss."""

    iterations: int
    seconds: float
    gaussians: int
    loss: float


def optimizers_for(params: nn.ParameterDict, scene_scale: float) -> dict[str, torch.optim.Optimizer]:
    """One Adam per parameter (the layout gsplat's strategies edit in place)."""
    return {key: torch.optim.Adam([{"params": params[key], "lr": lr * (scene_scale if key == "means" else 1.0),
                                    "name": key}], eps=1e-15)
            for key, lr in LEARNING_RATES.items()}


def train_splats(params: nn.ParameterDict, views: list[View], settings: SplatSettings, scene_scale: float,
                 seed: int = 0, backend: Backend = "auto") -> TrainReport:
    """Optimise ``params`` in place on ``views`` for ``settings.iterations`` steps."""
    started = time.perf_counter()
    iterations = settings.iterations
    optimizers = optimizers_for(params, scene_scale)
    decay = torch.optim.lr_scheduler.ExponentialLR(optimizers["means"], gamma=0.01 ** (1.0 / iterations))
    strategy = default_strategy(iterations)
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=scene_scale)
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    losses: list[float] = []
    for step in range(iterations):
        if not order:
            order = torch.randperm(len(views), generator=generator).tolist()
        view = views[order.pop()]
        degree = min(settings.sh_degree, step * (settings.sh_degree + 1) // iterations)
        out = render(params, view.camera, degree, backend=backend)
        strategy.step_pre_backward(params, optimizers, state, step, out.info)
        loss = (photometric_loss(out.rgb, view.image, settings.ssim_weight)
                + settings.depth_weight * depth_loss(out.depth, view.depth)
                + regularisation(params, scene_scale, settings.scale_weight, settings.opacity_weight))
        loss.backward()
        for optimizer in optimizers.values():
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        decay.step()
        strategy.step_post_backward(params, optimizers, state, step, out.info, packed=False)
        losses.append(float(loss.detach()))
    last = losses[-10:]
    return TrainReport(iterations, time.perf_counter() - started, len(params["means"]), sum(last) / len(last))


@torch.no_grad()
def render_views(params: nn.ParameterDict, views: list[View], sh_degree: int, backend: Backend = "auto"
                 ) -> list[tuple[Tensor, Tensor, Tensor]]:
    """(rgb, depth, alpha) of the splats at each view's camera."""
    out = [render(params, view.camera, sh_degree, backend=backend) for view in views]
    return [(r.rgb.clamp(0, 1), r.depth, r.alpha) for r in out]
