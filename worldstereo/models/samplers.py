"""Samplers for the rectified-flow velocity model: multi-step with classifier-free guidance, and 4-step DMD.

Convention (Wan): ``x_σ = (1 - σ) x₀ + σ ε`` with the model predicting ``v = ε - x₀`` at timestep ``1000 σ``;
both samplers integrate ``dx/dσ = v`` with Euler steps from ``σ = 1`` (noise) to ``σ = 0``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from diffusers import UniPCMultistepScheduler
from torch import Tensor

# (latents [B, ...], timestep [B] on the 0..1000 scale) -> velocity like latents
Denoiser = Callable[[Tensor, Tensor], Tensor]

NUM_TRAIN_TIMESTEPS = 1000


def shift_sigmas(sigmas: Tensor, shift: float) -> Tensor:
    """Wan/SD3 timestep shift ``σ' = sσ / (1 + (s - 1)σ)`` (s > 1 spends more steps at high noise)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def unipc_flow_grid(steps: int, shift: float, train_timesteps: int = NUM_TRAIN_TIMESTEPS,
                    final_sigma: Literal["zero", "sigma_min"] = "zero") -> tuple[Tensor, Tensor]:
    """diffusers 0.36.0's UniPC flow grid (the release's pin): ``σ = shift(1 - linspace(1, 1/T, n + 1))`` reversed
    without its last (0), timesteps ``⌊Tσ⌋`` (int64), sigmas float32 followed by the final σ (0 or the last σ)."""
    base = torch.from_numpy(1.0 - np.linspace(1, 1 / train_timesteps, steps + 1))  # numpy's float64 linspace
    sigmas = shift_sigmas(base, shift).flip(0)[:-1]
    last = sigmas[-1:] if final_sigma == "sigma_min" else sigmas.new_zeros(1)
    return (sigmas * train_timesteps).long(), torch.cat([sigmas, last]).float()


def euler(noise: Tensor, sigmas: Tensor, velocity: Denoiser, scale: float = NUM_TRAIN_TIMESTEPS) -> Tensor:
    """Integrate from ``sigmas[0]`` to ``sigmas[-1]``: ``x += (σ_next - σ) v(x, scale σ)`` in float32."""
    x = noise.float()
    levels = sigmas.tolist()
    for sigma, sigma_next in zip(levels[:-1], levels[1:]):
        timestep = torch.full((x.shape[0],), sigma * scale, device=x.device)
        x = x + (sigma_next - sigma) * velocity(x, timestep).float()
    return x


@dataclass(frozen=True)
class GuidedSampler:
    """``steps`` model steps with classifier-free guidance ``v = v_u + g (v_c - v_u)`` (two calls per step when
    ``g != 1``)."""

    steps: int = 40
    guidance: float = 5.0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError("steps must be positive")

    @property
    def guided(self) -> bool:
        return self.guidance != 1.0

    def velocity(self, conditional: Denoiser, unconditional: Denoiser | None) -> Denoiser:
        """The guided velocity (the conditional one when ``g = 1``)."""
        if not self.guided:
            return conditional
        if unconditional is None:
            raise ValueError(f"guidance {self.guidance} needs an unconditional denoiser")

        def guided(x: Tensor, t: Tensor) -> Tensor:
            v_uncond = unconditional(x, t).float()
            return v_uncond + self.guidance * (conditional(x, t).float() - v_uncond)

        return guided


@dataclass(frozen=True)
class FlowMatchingSampler(GuidedSampler):
    """``steps`` uniform steps in σ, shifted, integrated by Euler."""

    shift: float = 5.0

    def sigmas(self) -> Tensor:
        """``steps + 1`` noise levels from 1 down to 0 (float64)."""
        return shift_sigmas(torch.linspace(1.0, 0.0, self.steps + 1, dtype=torch.float64), self.shift)

    def sample(self, noise: Tensor, conditional: Denoiser, unconditional: Denoiser | None = None) -> Tensor:
        return euler(noise, self.sigmas(), self.velocity(conditional, unconditional))


@dataclass(frozen=True)
class DMDSampler:
    """Distilled few-step, CFG-free flow schedule: ``u = linspace(start, end, steps)`` reversed over ``end``,
    shifted to σ, then σ = 0; the model sees timestep ``end σ``. ``start`` defaults to ``end / steps``
    (1000, 750, 500, 250 for 4 steps)."""

    steps: int = 4
    shift: float = 5.0
    start: float | None = None
    end: float = NUM_TRAIN_TIMESTEPS

    guided = False

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError("steps must be positive")

    def timesteps(self) -> Tensor:
        """The ``steps`` model timesteps ``end σ``, in float32 as the release computes them."""
        start = self.end / self.steps if self.start is None else self.start
        u = torch.from_numpy(np.linspace(start, self.end, self.steps, dtype=np.float32)[::-1].copy()) / self.end
        return shift_sigmas(u, self.shift) * self.end

    def sigmas(self) -> Tensor:
        """``timesteps / end`` (float32), then 0."""
        sigmas = self.timesteps() / self.end
        return torch.cat([sigmas, sigmas.new_zeros(1)])

    def sample(self, noise: Tensor, denoiser: Denoiser, unconditional: Denoiser | None = None) -> Tensor:
        return euler(noise, self.sigmas(), denoiser, self.end)


@dataclass(frozen=True)
class UniPCSampler(GuidedSampler):
    """diffusers' ``UniPCMultistepScheduler`` built from the base model's scheduler config (unchanged); a flow-sigma
    config gets the grid of diffusers 0.36.0 (:func:`unipc_flow_grid`), whatever diffusers is installed."""

    scheduler_config: Mapping[str, Any] = field(default_factory=dict)

    def timesteps(self) -> Tensor:
        return self._scheduler("cpu").timesteps

    def sigmas(self) -> Tensor:
        """The ``steps + 1`` noise levels the solver steps through (float32)."""
        return self._scheduler("cpu").sigmas

    def _scheduler(self, device: torch.device | str) -> UniPCMultistepScheduler:
        scheduler = UniPCMultistepScheduler.from_config(dict(self.scheduler_config))
        scheduler.set_timesteps(self.steps, device=device)
        config = scheduler.config
        if config.use_flow_sigmas and not config.get("use_dynamic_shifting", False):
            timesteps, sigmas = unipc_flow_grid(self.steps, config.flow_shift, config.num_train_timesteps,
                                                config.final_sigmas_type)
            scheduler.timesteps, scheduler.sigmas = timesteps.to(device), sigmas
        return scheduler

    def sample(self, noise: Tensor, conditional: Denoiser, unconditional: Denoiser | None = None) -> Tensor:
        velocity = self.velocity(conditional, unconditional)
        scheduler = self._scheduler(noise.device)
        x = noise.float()
        for t in scheduler.timesteps:
            timestep = t.expand(x.shape[0]).to(x.device)
            x = scheduler.step(velocity(x, timestep).float(), t, x, return_dict=False)[0].float()
        return x
