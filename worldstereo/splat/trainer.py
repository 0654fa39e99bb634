"""The splat optimisation: Adam on every parameter and on a background colour, a view per step, gsplat's
densification strategy."""

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

# learning rates of gsplat's simple_trainer (means: x scene scale, decayed to 1% over the run), colours and
# scales raised 4x and 2x for runs of hundreds rather than tens of thousands of steps
LEARNING_RATES = {"means": 1.6e-4, "scales": 1e-2, "quats": 1e-3, "opacities": 5e-2, "sh0": 1e-2, "shN": 1e-2 / 20}
BACKGROUND_LR = 1e-2


@dataclass(frozen=True)
class TrainReport:
    """What a training run did: ``iterations``, ``seconds``, final ``gaussians``, the last 10 steps' mean loss
    and the learned ``background`` colour ``[3]`` (what the frames show where no Gaussian covers them)."""

    iterations: int
    seconds: float
    gaussians: int
    loss: float
    background: Tensor


def optimizers_for(params: nn.ParameterDict, scene_scale: float) -> dict[str, torch.optim.Optimizer]:
    """One Adam per parameter (the layout gsplat's strategies edit in place)."""
    return {key: torch.optim.Adam([{"params": params[key], "lr": lr * (scene_scale if key == "means" else 1.0),
                                    "name": key}], eps=1e-15)
            for key, lr in LEARNING_RATES.items()}


def initial_background(views: list[View]) -> Tensor:
    """Median colour of the frames where the cloud has no depth (sky, beyond the scene), grey if none."""
    pixels = torch.cat([v.image[v.depth <= 0] for v in views])
    if len(pixels) == 0:
        return torch.full((3,), 0.5, device=views[0].image.device)
    return pixels.median(0).values


def train_splats(params: nn.ParameterDict, views: list[View], settings: SplatSettings, scene_scale: float,
                 seed: int = 0, backend: Backend = "auto") -> TrainReport:
    """Optimise ``params`` in place on ``views`` for ``settings.iterations`` steps."""
    started = time.perf_counter()
    iterations = settings.iterations
    optimizers = optimizers_for(params, scene_scale)
    background = nn.Parameter(initial_background(views).float().clone())
    background_optimizer = torch.optim.Adam([background], lr=BACKGROUND_LR)
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
        out = render(params, view.camera, degree, background=background, backend=backend)
        strategy.step_pre_backward(params, optimizers, state, step, out.info)
        loss = (photometric_loss(out.rgb, view.image, settings.ssim_weight)
                + settings.depth_weight * depth_loss(out.depth, view.depth)
                + regularisation(params, scene_scale, settings.scale_weight, settings.opacity_weight))
        loss.backward()
        for optimizer in (*optimizers.values(), background_optimizer):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        decay.step()
        strategy.step_post_backward(params, optimizers, state, step, out.info, packed=False)
        losses.append(float(loss.detach()))
    last = losses[-10:]
    return TrainReport(iterations, time.perf_counter() - started, len(params["means"]), sum(last) / len(last),
                       background.detach().clamp(0, 1))


@torch.no_grad()
def render_views(params: nn.ParameterDict, views: list[View], sh_degree: int, background: Tensor | None = None,
                 backend: Backend = "auto") -> list[tuple[Tensor, Tensor, Tensor]]:
    """(rgb, depth, alpha) of the splats at each view's camera, over ``background``."""
    out = [render(params, view.camera, sh_degree, background=background, backend=backend) for view in views]
    return [(r.rgb.clamp(0, 1), r.depth, r.alpha) for r in out]
