"""Samplers for the rectified-flow velocity model: multi-step with classifier-free guidance, and 4-step DMD.

Convention (Wan): ``x_σ = (1 - σ) x₀ + σ ε`` with the model predicting ``v = ε - x₀`` at timestep ``1000 σ``;
both samplers integrate ``dx/dσ = v`` with Euler steps from ``σ = 1`` (noise) to ``σ = 0``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

# (latents [B, ...], timestep [B] on the 0..1000 scale) -> velocity like latents
Denoiser = Callable[[Tensor, Tensor], Tensor]

NUM_TRAIN_TIMESTEPS = 1000


def shift_sigmas(sigmas: Tensor, shift: float) -> Tensor:
    """Wan/SD3 timestep shift ``σ' = sσ / (1 + (s - 1)σ)`` (s > 1 spends more steps at high noise)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def euler(noise: Tensor, sigmas: Tensor, velocity: Denoiser) -> Tensor:
    """Integrate from ``sigmas[0]`` to ``sigmas[-1]``: ``x += (σ_next - σ) v(x, 1000 σ)`` in float32."""
    x = noise.float()
    levels = sigmas.tolist()
    for sigma, sigma_next in zip(levels[:-1], levels[1:]):
        timestep = torch.full((x.shape[0],), sigma * NUM_TRAIN_TIMESTEPS, device=x.device)
        x = x + (sigma_next - sigma) * velocity(x, timestep).float()
    return x


@dataclass(frozen=True)
class FlowMatchingSampler:
    """``steps`` uniform steps in σ, shifted; CFG ``v = v_u + g (v_c - v_u)`` costs two calls per step."""

    steps: int = 40
    guidance: float = 5.0
    shift: float = 5.0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError("steps must be positive")

    @property
    def guided(self) -> bool:
        return self.guidance != 1.0

    def sigmas(self) -> Tensor:
        """``steps + 1`` noise levels from 1 down to 0 (float64)."""
        return shift_sigmas(torch.linspace(1.0, 0.0, self.steps + 1, dtype=torch.float64), self.shift)

    def sample(self, noise: Tensor, conditional: Denoiser, unconditional: Denoiser | None = None) -> Tensor:
        if not self.guided:
            return euler(noise, self.sigmas(), conditional)
        if unconditional is None:
            raise ValueError(f"guidance {self.guidance} needs an unconditional denoiser")

        def guided(x: Tensor, t: Tensor) -> Tensor:
            v_uncond = unconditional(x, t).float()
            return v_uncond + self.guidance * (conditional(x, t).float() - v_uncond)

        return euler(noise, self.sigmas(), guided)


@dataclass(frozen=True)
class DMDSampler:
    """Distilled few-step, CFG-free schedule: timesteps ``linspace(start, 1000, steps)`` reversed, shifted,
    then σ = 0. ``start`` defaults to ``1000 / steps`` (1000, 750, 500, 250 for 4 steps)."""

    steps: int = 4
    shift: float = 5.0
    start: float | None = None

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError("steps must be positive")

    def sigmas(self) -> Tensor:
        start = NUM_TRAIN_TIMESTEPS / self.steps if self.start is None else self.start
        timesteps = torch.linspace(start, NUM_TRAIN_TIMESTEPS, self.steps, dtype=torch.float64).flip(0)
        sigmas = shift_sigmas(timesteps / NUM_TRAIN_TIMESTEPS, self.shift)
        return torch.cat([sigmas, sigmas.new_zeros(1)])

    def sample(self, noise: Tensor, denoiser: Denoiser) -> Tensor:
        return euler(noise, self.sigmas(), denoiser)
