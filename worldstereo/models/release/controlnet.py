"""The released GGM ControlNet: adaLN self-attention blocks over the 36-channel control latents plus the
embedded ``[render mask; Plücker rays]``, one zero-initialised read-out per block (RELEASED_MODEL §2.3-2.6)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from diffusers.models.normalization import RMSNorm
from diffusers.models.transformers.transformer_wan import WanAttention, WanAttnProcessor
from torch import Tensor, nn

from worldstereo.models.release.config import ControlNetConfig
from worldstereo.models.rope import PositionalRotaryEmbed
from worldstereo.models.wan import zero_module

PATCH = (1, 2, 2)


class MaskCameraEmbedding(nn.Module):
    """``[B, 7, F, H, W]`` (mask + Plücker at pixel rate) → ``[B, F*h'*w', conv_out_dim]`` tokens.

    Conv3d of stride ``(mask_downsample, 8, 8)`` → GroupNorm → SiLU → zero-initialised patch Conv3d (stride 16 in
    all: VAE 8 x patch 2)."""

    def __init__(self, config: ControlNetConfig) -> None:
        super().__init__()
        cell = (config.mask_downsample, 8, 8)
        self.downsample = config.mask_downsample
        self.interp = config.interp
        self.mask_proj = nn.Sequential(
            nn.Conv3d(config.add_channels, config.mid_channels, kernel_size=cell, stride=cell),
            nn.GroupNorm(config.mid_channels // 8, config.mid_channels),
            nn.SiLU(),
        )
        self.mask_zero_proj = zero_module(
            nn.Conv3d(config.mid_channels, config.conv_out_dim, kernel_size=PATCH, stride=PATCH)
        )

    def forward(self, condition: Tensor) -> Tensor:
        if self.downsample > 1:
            back = self.downsample - 1 if self.interp else 0
            condition = F.pad(condition, (0, 0, 0, 0, self.downsample - 1, back))
        dtype = self.mask_proj[0].weight.dtype
        return self.mask_zero_proj(self.mask_proj(condition.to(dtype))).flatten(2).transpose(1, 2)


class AdaLayerNormZero(nn.Module):
    """SiLU → Linear(T → 3·dim) → (shift, scale, gate); ``LN(x)(1 + scale) + shift``."""

    def __init__(self, time_dim: int, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(time_dim, 3 * dim)
        self.norm = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, hidden: Tensor, temb: Tensor) -> tuple[Tensor, Tensor]:
        """Modulated ``hidden`` and the gate ``[B, 1, dim]``."""
        shift, scale, gate = self.linear(F.silu(temb.to(self.linear.weight.dtype))).unsqueeze(1).chunk(3, dim=-1)
        normed = self.norm(hidden.to(self.norm.weight.dtype))
        return normed * (1 + scale) + shift, gate


class ControlBlock(nn.Module):
    """``x += gate₁·Attn(mod₁(x))``; ``x += gate₂·FFN(mod₂(x))`` (no cross-attention). The q/k norms are diffusers'
    ``RMSNorm`` across heads, as in the release's ``Attention``: variance in float32, and a float32 result for
    float32 weights under autocast."""

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, time_dim: int) -> None:
        super().__init__()
        self.norm1 = AdaLayerNormZero(time_dim, dim)
        self.self_attn = WanAttention(dim, num_heads, dim // num_heads, eps=1e-6, processor=WanAttnProcessor())
        self.self_attn.norm_q, self.self_attn.norm_k = RMSNorm(dim, eps=1e-6), RMSNorm(dim, eps=1e-6)
        self.norm2 = AdaLayerNormZero(time_dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))

    def forward(self, hidden: Tensor, temb: Tensor, rotary: tuple[Tensor, Tensor]) -> Tensor:
        dtype = self.ffn[0].weight.dtype
        modulated, gate = self.norm1(hidden, temb)
        hidden = hidden + gate * self.self_attn(modulated.to(dtype), None, None, rotary)
        modulated, gate = self.norm2(hidden, temb)
        return hidden + gate * self.ffn(modulated.to(dtype))


class ReleaseControlNet(nn.Module):
    """Keys ``controlnet.*`` of the release: ``proj_in`` (Identity when ``dim == conv_out_dim``),
    ``controlnet_blocks``, zero ``proj_out``, ``controlnet_patch_embedding`` (36 → conv_out_dim) and
    ``controlnet_mask_embedding``."""

    def __init__(self, config: ControlNetConfig, in_channels: int = 36) -> None:
        super().__init__()
        self.config = config
        out = config.conv_out_dim
        self.proj_in = nn.Identity() if config.dim == out else nn.Linear(out, config.dim)
        self.controlnet_blocks = nn.ModuleList(
            ControlBlock(config.dim, config.ffn_dim, config.num_heads, config.time_embed_dim)
            for _ in range(config.num_layers)
        )
        self.proj_out = nn.ModuleList(zero_module(nn.Linear(config.dim, out)) for _ in range(config.num_layers))
        self.controlnet_patch_embedding = nn.Conv3d(in_channels, out, kernel_size=PATCH, stride=PATCH)
        self.controlnet_mask_embedding = MaskCameraEmbedding(config)
        self.rope = PositionalRotaryEmbed(config.dim // config.num_heads, PATCH, 1024)

    def residuals(self, control: Tensor, condition: Tensor, temb: Tensor) -> Iterator[Tensor]:
        """``control [B, 36, F, h, w]`` = ``[x_t; mask; render latent]``, ``condition [B, 7, F, H, W]``, ``temb
        [B, T]`` → one residual ``[B, F*h'*w', conv_out_dim]`` per block, lazily (block ``i`` runs when asked)."""
        dtype = self.controlnet_patch_embedding.weight.dtype
        rotary = self.rope(control)
        tokens = self.controlnet_patch_embedding(control.to(dtype)).flatten(2).transpose(1, 2)
        tokens = tokens + self.controlnet_mask_embedding(condition).to(tokens.dtype)
        hidden = self.proj_in(tokens)
        for block, project in zip(self.controlnet_blocks, self.proj_out):
            hidden = block(hidden, temb, rotary)
            yield project(hidden.to(project.weight.dtype))

    @torch.no_grad()
    def copy_patch_embedding(self, patch_embedding: nn.Conv3d) -> None:
        """Initialise the control patch embedding from the backbone's, as the release does before its overlay."""
        self.controlnet_patch_embedding.weight.copy_(patch_embedding.weight)
        self.controlnet_patch_embedding.bias.copy_(patch_embedding.bias)
