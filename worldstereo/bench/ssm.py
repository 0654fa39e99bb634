"""SSM attention: per-pair (``[B*F, h*2w, C]``, the paper) versus joint (``[B, F*h*2w, C]``, the released code).

Self-attention over ``F`` pairs of ``L`` tokens costs ``F L²`` per pair-restricted pass and ``(F L)²`` jointly:
``F`` times less. Projections and feed-forward layers cost the same in both, so the whole branch gains less;
``flop_speedup`` is that whole-branch estimate, ``speedup`` the measured one.
"""

from __future__ import annotations

import time

import torch

from worldstereo.models.paper.config import SSMAttention
from worldstereo.models.paper.ssm_branch import SpatialStereoMemory


def branch_flops(sequences: int, tokens: int, dim: int, ffn_dim: int, context: int, layers: int) -> float:
    """Multiply-add FLOPs of the branch's blocks over ``sequences`` attention groups of ``tokens`` tokens."""
    total = sequences * tokens
    per_block = (
        2 * 4 * total * dim * dim  # self-attention q, k, v, out
        + 2 * 2 * sequences * tokens * tokens * dim  # scores and weighted sum
        + 2 * 2 * total * dim * dim + 2 * 2 * sequences * context * dim * dim  # cross-attention projections
        + 2 * 2 * total * context * dim  # cross-attention
        + 2 * 2 * total * dim * ffn_dim  # feed-forward
    )
    return float(layers * per_block)


def _best_time(run, repeats: int) -> float:
    run()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def run_ssm_benchmark(
    *,
    pairs: int = 8,
    latent_height: int = 32,
    latent_width: int = 32,
    dim: int = 128,
    num_heads: int = 2,
    ffn_dim: int = 512,
    num_layers: int = 2,
    context_tokens: int = 16,
    repeats: int = 3,
    device: str = "cpu",
    seed: int = 0,
) -> dict:
    """Time the SSM branch on ``pairs`` stitched pairs in both attention modes (same weights, same inputs)."""
    torch.manual_seed(seed)
    ssm = SpatialStereoMemory(backbone_dim=dim, dim=dim, num_heads=num_heads, ffn_dim=ffn_dim,
                              num_layers=num_layers).to(device).eval()
    latents = torch.randn(2, 1, 16, pairs, latent_height, latent_width, device=device)
    pointmaps = torch.randn(1, 16, pairs, latent_height, 2 * latent_width, device=device)
    frames = torch.arange(1, pairs + 1, device=device)
    temb = torch.randn(1, dim, device=device)
    context = torch.randn(1, context_tokens, dim, device=device)

    def run(mode: SSMAttention) -> None:
        with torch.inference_mode():
            for residual in ssm.residuals(latents[0], latents[1], pointmaps, frames, temb, context, attention=mode):
                residual.tokens.sum().item()  # forces completion on asynchronous devices

    tokens = (latent_height // 2) * latent_width  # h' x 2w' per stitched pair
    per_pair_s = _best_time(lambda: run("pair"), repeats)
    joint_s = _best_time(lambda: run("joint"), repeats)
    flops_pair = branch_flops(pairs, tokens, dim, ffn_dim, context_tokens, num_layers)
    flops_joint = branch_flops(1, pairs * tokens, dim, ffn_dim, context_tokens, num_layers)
    return {
        "pairs": pairs,
        "tokens_per_pair": tokens,
        "joint_tokens": pairs * tokens,
        "dim": dim,
        "layers": num_layers,
        "device": device,
        "per_pair_s": per_pair_s,
        "joint_s": joint_s,
        "speedup": joint_s / per_pair_s,
        "theoretical_attention_speedup": float(pairs),
        "flop_speedup": flops_joint / flops_pair,
    }


def format_report(result: dict) -> str:
    """A few lines for a terminal."""
    return "\n".join([
        f"SSM attention, {result['pairs']} pairs x {result['tokens_per_pair']} tokens "
        f"(joint sequence {result['joint_tokens']}), width {result['dim']}, {result['layers']} blocks, "
        f"{result['device']}",
        f"  per-pair: {result['per_pair_s'] * 1e3:.1f} ms   joint: {result['joint_s'] * 1e3:.1f} ms   "
        f"measured speed-up {result['speedup']:.2f}x",
        f"  theory: attention {result['theoretical_attention_speedup']:.0f}x, whole branch (FLOPs) "
        f"{result['flop_speedup']:.2f}x",
    ])


if __name__ == "__main__":
    print(format_report(run_ssm_benchmark()))
