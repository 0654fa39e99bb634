"""One released-model clip with random weights: encode, transformer calls, sampling, decode, peak memory.

``full`` is Wan2.1-I2V-14B with the release's ``memory`` ControlNet config, built on the meta device and then
materialised on the target device (bf16 where supported); ``tiny`` is the test-sized twin in float32. The
clip has ``frames`` keyframes and ``references`` reference frames (memory variants); text and CLIP embeddings
are random (the encoders are not timed).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import Literal

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler

from worldstereo.models.loading import keeps_fp32
from worldstereo.models.paper.config import tiny_config
from worldstereo.models.release.config import (
    DMDSchedule,
    ReleaseConfig,
    Variant,
    release_controlnet,
    tiny_controlnet,
)
from worldstereo.models.release.model import KeyframeClip, ReleaseModel, make_sampler
from worldstereo.models.release.transformer import ReleaseTransformer
from worldstereo.models.rope import PositionalRotaryEmbed
from worldstereo.models.wan import wan_i2v_14b, wan_i2v_tiny

Size = Literal["tiny", "full"]
CLIP_TOKENS = 257  # CLIP ViT-H/14 at 224 px: 16 x 16 patches + class token
DMD_SELF_TEST = DMDSchedule(start=250.0, end=1000.0, shift=5.0, steps=4)  # the release's scheduler self-test


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def materialise(model: ReleaseTransformer, device: torch.device, seed: int) -> ReleaseTransformer:
    """Allocate a meta-device model on ``device`` with random weights (norm scales 1, biases 0) and rebuild
    the non-persistent RoPE tables."""
    model = model.to_empty(device=device)
    generator = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.zero_()
            elif "norm" in name and parameter.ndim == 1:
                parameter.fill_(1.0)
            else:
                parameter.copy_(torch.randn(parameter.shape, generator=generator, device=device) * 0.02)
    config = model.config
    model.rope = PositionalRotaryEmbed(config.attention_head_dim, tuple(config.patch_size),
                                       config.rope_max_seq_len).to(device)
    control = model.controlnet_cfg
    model.controlnet.rope = PositionalRotaryEmbed(control.dim // control.num_heads, (1, 2, 2), 1024).to(device)
    return model.eval().requires_grad_(False)


def build_model(variant: Variant, size: Size, device: torch.device, dtype: torch.dtype, seed: int = 0
                ) -> ReleaseModel:
    memory = variant != "camera"
    if size == "full":
        wan, control, vae_config = wan_i2v_14b(), release_controlnet(memory), {}
    else:
        wan, control, vae_config = wan_i2v_tiny(), tiny_controlnet(memory), dict(tiny_config().vae)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            transformer = ReleaseTransformer(wan, control, memory=memory)
    finally:
        torch.set_default_dtype(previous)
    for name, parameter in transformer.named_parameters():
        if keeps_fp32(ReleaseTransformer, name):
            parameter.data = parameter.data.float()
    transformer = materialise(transformer, device, seed)
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(**vae_config).to(device).eval().requires_grad_(False)
    config = ReleaseConfig(variant=variant, base_model="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", controlnet=control,
                           dmd=DMD_SELF_TEST if variant == "memory-dmd" else None)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return ReleaseModel(transformer, vae, config, make_sampler(config, dict(scheduler.config)), device=device)


def random_clip(frames: int, height: int, width: int, references: int, seed: int = 0) -> KeyframeClip:
    generator = torch.Generator().manual_seed(seed)
    w2c = torch.eye(4).repeat(frames + references, 1, 1)
    w2c[:, :3, 3] = torch.randn(frames + references, 3, generator=generator) * 0.3
    K = torch.tensor([[0.8 * width, 0, width / 2], [0, 0.8 * width, height / 2], [0, 0, 1]])
    return KeyframeClip(
        image=torch.rand(height, width, 3, generator=generator),
        renders=torch.rand(frames, height, width, 3, generator=generator),
        holes=(torch.rand(frames, height, width, generator=generator) > 0.7).float(),
        w2c=w2c[:frames], intrinsics=K.expand(frames, 3, 3),
        reference_images=torch.rand(references, height, width, 3, generator=generator) if references else None,
        reference_w2c=w2c[frames:] if references else None,
        ref_index=torch.linspace(0, frames - 2, references).round().long() if references else None,
    )


def _timed(device: torch.device, work: Callable[[], object]) -> tuple[float, object]:
    _synchronize(device)
    start = time.perf_counter()
    result = work()
    _synchronize(device)
    return time.perf_counter() - start, result


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GiB (process peak RSS)


def run_model_benchmark(variant: Variant = "memory-dmd", size: Size = "tiny", device: str = "cpu", *,
                        frames: int = 21, height: int | None = None, width: int | None = None,
                        references: int = 8, steps: int | None = None, seed: int = 0) -> dict:
    """Build, then one clip end to end; ``height x width`` default 480 x 832 (full) or 96 x 160 (tiny)."""
    target = torch.device(device)
    height = height or (480 if size == "full" else 96)
    width = width or (832 if size == "full" else 160)
    dtype = torch.bfloat16 if size == "full" and target.type == "cuda" else torch.float32
    if target.type == "cuda":
        torch.cuda.reset_peak_memory_stats(target)
    build_s, model = _timed(target, lambda: build_model(variant, size, target, dtype, seed))
    if steps is not None:
        model.sampler = make_sampler(model.config, getattr(model.sampler, "scheduler_config", {}), steps)
    config = model.transformer.config
    generator = torch.Generator().manual_seed(seed)
    prompt = torch.randn(512, config.text_dim, generator=generator)
    negative = torch.randn(512, config.text_dim, generator=generator)
    image_tokens = torch.randn(CLIP_TOKENS if size == "full" else 17, config.image_dim, generator=generator)
    clip = random_clip(frames, height, width, references if model.config.memory else 0, seed)
    calls: list[float] = []
    original = model.transformer.forward

    def counted(*args, **kwargs):
        seconds, out = _timed(target, lambda: original(*args, **kwargs))
        calls.append(seconds)
        return out

    model.transformer.forward = counted
    with torch.inference_mode():
        encode_s, conditioning = _timed(target, lambda: model.encode(clip, image_tokens))
        sampling_s, latents = _timed(target, lambda: model.sample(conditioning, prompt, negative, seed))
        decode_s, video = _timed(target, lambda: model.decode(latents))
    parameters = sum(p.numel() for p in model.transformer.parameters())
    control = sum(p.numel() for p in model.transformer.controlnet.parameters())
    return {
        "variant": variant, "size": size, "device": str(target), "dtype": str(dtype).removeprefix("torch."),
        "frames": frames, "height": height, "width": width, "references": 0 if clip.reference_images is None else len(clip.reference_images),
        "sampler": type(model.sampler).__name__, "transformer_calls": len(calls),
        "parameters_m": parameters / 1e6, "controlnet_parameters_m": control / 1e6,
        "build_s": build_s, "encode_s": encode_s, "transformer_call_s": sum(calls) / max(len(calls), 1),
        "sampling_s": sampling_s, "decode_s": decode_s, "peak_memory_gb": peak_memory_gb(target),
        "output_shape": list(video.shape), "finite": bool(torch.isfinite(video).all()),
    }


def format_report(result: dict) -> str:
    return (
        f"WorldStereo 2.0 {result['variant']} ({result['size']}, {result['parameters_m']:.2f} M params, "
        f"{result['dtype']}) on {result['device']}: {result['frames']} keyframes {result['height']}x"
        f"{result['width']}, {result['references']} references\n"
        f"  build {result['build_s']:.2f} s | encode {result['encode_s']:.2f} s | "
        f"{result['transformer_calls']} transformer calls x {result['transformer_call_s']:.3f} s "
        f"({result['sampler']}) = sampling {result['sampling_s']:.2f} s | decode {result['decode_s']:.2f} s\n"
        f"  peak memory {result['peak_memory_gb']:.2f} GiB; output {result['output_shape']}"
    )
