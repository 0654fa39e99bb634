"""Sampling cost: 4-step CFG-free DMD versus 40-step flow matching with CFG (two calls per step).

Both run the same model on the same conditioning, so the theoretical ratio is the number of transformer
calls, ``2 x 40 / 4 = 20``. VAE encoding and decoding are outside the timed region.
"""

from __future__ import annotations

import time

import torch

from worldstereo.models.paper.config import WorldStereoConfig, tiny_config
from worldstereo.models.paper.model import WorldStereoModel


def synthetic_clip(model: WorldStereoModel, frames: int, height: int, width: int, seed: int = 0) -> dict:
    """Random inputs of :meth:`WorldStereoModel.generate` for one clip with ``frames // 4`` SSM targets."""
    generator = torch.Generator().manual_seed(seed)
    config = model.transformer.backbone.config
    targets = max(1, frames // 4)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator)

    return {
        "image": rand(height, width, 3),
        "cache_renders": rand(frames, height, width, 3),
        "render_masks": (rand(frames, height, width) > 0.3).float(),
        "plucker": rand(frames, 6, height, width) * 2 - 1,
        "prompt_embeds": torch.randn(512, config.text_dim, generator=generator),
        "negative_prompt_embeds": torch.randn(512, config.text_dim, generator=generator),
        "image_embeds": None if config.image_dim is None else torch.randn(4, config.image_dim, generator=generator),
        "references": rand(targets, height, width, 3),
        "pointmaps": (rand(targets, height, width, 3), rand(targets, height, width, 3)),
        "target_indices": torch.linspace(1, frames - 1, targets).round().long(),
    }


def run_dmd_benchmark(
    config: WorldStereoConfig | None = None,
    *,
    frames: int = 9,
    height: int = 64,
    width: int = 64,
    flow_steps: int = 40,
    dmd_steps: int = 4,
    guidance: float = 5.0,
    repeats: int = 3,
    device: str = "cpu",
    seed: int = 0,
) -> dict:
    """Time :meth:`WorldStereoModel.sample` with both samplers (default: the tiny model on CPU)."""
    torch.manual_seed(seed)
    model = WorldStereoModel.from_config(config or tiny_config(), device=device)
    clip = synthetic_clip(model, frames, height, width, seed)
    prompt, negative = clip.pop("prompt_embeds"), clip.pop("negative_prompt_embeds")
    image, renders, masks, plucker = (clip.pop(k) for k in ("image", "cache_renders", "render_masks", "plucker"))
    conditioning = model.encode(image, renders, masks, plucker, **clip)
    calls = [0]
    hook = model.transformer.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))

    def timed(**kwargs) -> tuple[float, int]:
        best, count = float("inf"), 0
        for _ in range(repeats):
            calls[0] = 0
            start = time.perf_counter()
            model.sample(conditioning, prompt, negative_prompt_embeds=negative, seed=seed, **kwargs).sum().item()
            best, count = min(best, time.perf_counter() - start), calls[0]
        return best, count

    try:
        model.sample(conditioning, prompt, seed=seed, sampler="dmd", steps=1)  # warm-up: first-call costs
        flow_s, flow_calls = timed(sampler="flow", steps=flow_steps, guidance=guidance)
        dmd_s, dmd_calls = timed(sampler="dmd", steps=dmd_steps)
    finally:
        hook.remove()
    return {
        "latent_shape": list(conditioning.latent_shape),
        "device": device,
        "flow_steps": flow_steps,
        "guidance": guidance,
        "dmd_steps": dmd_steps,
        "flow_calls": flow_calls,
        "dmd_calls": dmd_calls,
        "flow_s": flow_s,
        "dmd_s": dmd_s,
        "speedup": flow_s / dmd_s,
        "theoretical_speedup": (2 if guidance != 1.0 else 1) * flow_steps / dmd_steps,
    }


def format_report(result: dict) -> str:
    """A few lines for a terminal."""
    return "\n".join([
        f"Sampling, latents {result['latent_shape']} on {result['device']}",
        f"  flow matching: {result['flow_steps']} steps, CFG {result['guidance']}: {result['flow_calls']} calls, "
        f"{result['flow_s']:.3f} s",
        f"  DMD: {result['dmd_steps']} steps, no CFG: {result['dmd_calls']} calls, {result['dmd_s']:.3f} s",
        f"  speed-up {result['speedup']:.1f}x measured, {result['theoretical_speedup']:.1f}x theoretical",
    ])


if __name__ == "__main__":
    print(format_report(run_dmd_benchmark()))
