"""Camera ControlNet (Uni3C-style) carrying the Global-Geometric Memory: the 3D cache seen from the target cameras."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from worldstereo.models.paper.branch import KEEP_FP32, BranchTrunk, Residual
from worldstereo.models.wan import zero_module


class CameraConditionEmbedding(nn.Module):
    """Pixel-rate ``[mask; Plücker]`` → tokens on the latent patch grid.

    Conv3d (one kernel per latent cell) → GroupNorm → SiLU → zero-initialised patch Conv3d. The clip is
    front-padded with ``temporal - 1`` empty frames so frame 0 fills latent frame 0 alone, as in Wan's causal VAE.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        dim: int,
        temporal: int,
        spatial: int,
        patch_size: Sequence[int],
    ) -> None:
        super().__init__()
        self.temporal = temporal
        cell = (temporal, spatial, spatial)
        self.encode = nn.Sequential(
            nn.Conv3d(in_channels, mid_channels, kernel_size=cell, stride=cell),
            nn.GroupNorm(max(1, mid_channels // 8), mid_channels),
            nn.SiLU(),
        )
        self.project = zero_module(nn.Conv3d(mid_channels, dim, kernel_size=patch_size, stride=patch_size))

    def forward(self, condition: Tensor) -> Tensor:
        """``[B, C, N, H, W]`` with ``N = 1 + 4k`` → ``[B, T*h*w, dim]`` (patch-grid order)."""
        padded = F.pad(condition, (0, 0, 0, 0, self.temporal - 1, 0))
        return self.project(self.encode(padded)).flatten(2).transpose(1, 2)


class CameraControlNet(ModelMixin, ConfigMixin):
    """Input: noisy latents (16) + frame mask (4) + VAE latents of the rendered cache (16), patch-embedded, plus
    the embedded ``[render mask; Plücker rays]``. Block ``i``'s zero-initialised read-out is added after backbone
    block ``inject_layers[i]``."""

    _keep_in_fp32_modules = KEEP_FP32

    @register_to_config
    def __init__(
        self,
        backbone_dim: int = 5120,
        dim: int = 1024,
        num_heads: int = 16,
        ffn_dim: int = 8192,
        num_layers: int = 20,
        inject_layers: Sequence[int] | None = None,
        in_channels: int = 36,
        condition_channels: int = 7,
        condition_mid_channels: int = 256,
        temporal_compression: int = 4,
        spatial_compression: int = 8,
        patch_size: Sequence[int] = (1, 2, 2),
        eps: float = 1e-6,
        rope_max_seq_len: int = 1024,
    ) -> None:
        super().__init__()
        patch_size = tuple(patch_size)
        self.patch_embedding = nn.Conv3d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.condition_embedding = CameraConditionEmbedding(
            condition_channels, condition_mid_channels, dim, temporal_compression, spatial_compression, patch_size
        )
        self.trunk = BranchTrunk(
            backbone_dim, dim, num_heads, ffn_dim, num_layers, inject_layers, patch_size, eps, rope_max_seq_len
        )

    def residuals(
        self, control_latents: Tensor, camera_condition: Tensor, temb: Tensor, context: Tensor
    ) -> Iterator[Residual]:
        """``control_latents [B, 36, T, h, w]``, ``camera_condition [B, 7, N, H, W]``, ``temb [B, D]``,
        ``context [B, M, D]`` (backbone-embedded) → one residual over all backbone tokens per block."""
        dtype = self.patch_embedding.weight.dtype
        tokens = self.patch_embedding(control_latents.to(dtype)).flatten(2).transpose(1, 2)
        tokens = tokens + self.condition_embedding(camera_condition.to(dtype))
        rotary = self.trunk.rope(control_latents)
        for layer, output in self.trunk.run(tokens, temb, context, rotary):
            yield Residual(layer, output)
