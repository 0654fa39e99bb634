"""Wan2.1-I2V, the backbone both architectures extend: its config, the I2V frame mask and text length, and the
zero-initialised read-outs that make a control branch start as an exact no-op."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

# diffusers' Wan attention splits the cross-attention context as [image tokens; 512 text tokens].
WAN_TEXT_TOKENS = 512


def wan_i2v_14b() -> dict[str, Any]:
    """The Wan2.1-I2V-14B transformer config (diffusers layout)."""
    return {
        "patch_size": (1, 2, 2),
        "num_attention_heads": 40,
        "attention_head_dim": 128,
        "in_channels": 36,
        "out_channels": 16,
        "text_dim": 4096,
        "freq_dim": 256,
        "ffn_dim": 13824,
        "num_layers": 40,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-6,
        "image_dim": 1280,
        "added_kv_proj_dim": 5120,
        "rope_max_seq_len": 1024,
    }


def wan_i2v_tiny(text_dim: int = 32, image_dim: int = 16, layers: int = 3) -> dict[str, Any]:
    """A Wan2.1-I2V-shaped transformer config a few thousand parameters per block wide (tests, CPU benchmarks)."""
    return wan_i2v_14b() | {
        "num_attention_heads": 2,
        "attention_head_dim": 16,
        "text_dim": text_dim,
        "freq_dim": 16,
        "ffn_dim": 64,
        "num_layers": layers,
        "image_dim": image_dim,
        "added_kv_proj_dim": 32,
    }


def latent_frame_indices(frame_indices: Tensor, temporal: int = 4) -> Tensor:
    """Pixel frame → latent frame of Wan's causal VAE: 0 → 0, and frames ``4j-3 .. 4j`` → ``j``."""
    return (frame_indices + temporal - 1) // temporal


def frame_mask(like: Tensor, temporal: int = 4) -> Tensor:
    """Wan I2V mask ``[1, temporal, T, h, w]`` for latents ``like [1, z, T, h, w]``: the given first frame is 1."""
    mask = like.new_zeros(1, temporal, *like.shape[2:])
    mask[:, :, 0] = 1
    return mask


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter: the branch starts as an exact no-op on the backbone."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module
