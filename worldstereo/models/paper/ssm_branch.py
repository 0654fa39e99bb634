"""Spatial-Stereo Memory (paper Sec. 3.3): each sampled target frame attends to its own retrieved reference."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from worldstereo.errors import ConfigurationError
from worldstereo.models.paper.branch import KEEP_FP32, BranchTrunk, Residual
from worldstereo.models.paper.config import SSMAttention
from worldstereo.models.rope import stitched_positions


def stitch(target: Tensor, reference: Tensor) -> Tensor:
    """Horizontal stitch along width: ``[..., h, w]`` twice → ``[..., h, 2w]`` (target left)."""
    return torch.cat([target, reference], dim=-1)


class SpatialStereoMemory(ModelMixin, ConfigMixin):
    """SSM branch: ``z_ssm = [z_tar; z_ref] + [ẑ_tar; ẑ_ref]`` through Wan blocks trained from scratch.

    ``attention="pair"`` arranges tokens as ``[B*F, h*2w, C]`` so each target attends to its own reference only
    (the paper); ``"joint"`` puts every pair in one sequence ``[B, F*h*2w, C]`` (the released variant). Only the
    target half of each block's output is read out, and it is added to the backbone tokens of the target's
    latent frame.
    """

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
        latent_channels: int = 16,
        attention: SSMAttention = "pair",
        patch_size: Sequence[int] = (1, 2, 2),
        eps: float = 1e-6,
        rope_max_seq_len: int = 1024,
    ) -> None:
        super().__init__()
        if attention not in ("pair", "joint"):
            raise ConfigurationError(f"SSM attention must be 'pair' or 'joint', not {attention!r}")
        patch_size = tuple(patch_size)
        if patch_size[0] != 1:
            raise ConfigurationError("the SSM branch embeds single latent frames: temporal patch size must be 1")
        self.patch_embedding = nn.Conv3d(latent_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.trunk = BranchTrunk(
            backbone_dim, dim, num_heads, ffn_dim, num_layers, inject_layers, patch_size, eps, rope_max_seq_len
        )

    def residuals(
        self,
        target_latents: Tensor,
        reference_latents: Tensor,
        pointmap_latents: Tensor,
        frames: Tensor,
        temb: Tensor,
        context: Tensor,
        attention: SSMAttention | None = None,
    ) -> Iterator[Residual]:
        """Targets and references ``[B, C, F, h, w]``, stitched pointmap latents ``[B, C, F, h, 2w]``, target
        latent frames ``frames [F]`` → per block, target tokens ``[B, F, h'*w', D]`` for those frames."""
        mode = attention or self.config.attention
        if mode not in ("pair", "joint"):
            raise ConfigurationError(f"SSM attention must be 'pair' or 'joint', not {mode!r}")
        dtype = self.patch_embedding.weight.dtype
        stitched = stitch(target_latents, reference_latents) + pointmap_latents  # z_ssm = z_stitch + ẑ_pm
        grid = self.patch_embedding(stitched.to(dtype))  # [B, D, F, h', 2w']
        batch, _, pairs, rows, cols = grid.shape
        tokens = grid.permute(0, 2, 3, 4, 1)  # [B, F, h', 2w', D]
        cos, sin = self.trunk.rope.at(stitched_positions(frames, rows, cols // 2))  # [F, h'*2w', 1, d]
        if mode == "pair":
            tokens = tokens.reshape(batch * pairs, rows * cols, -1)
            rotary = (cos.repeat(batch, 1, 1, 1), sin.repeat(batch, 1, 1, 1))
            temb = temb.repeat_interleave(pairs, dim=0)
            context = context.repeat_interleave(pairs, dim=0)
        else:
            tokens = tokens.reshape(batch, pairs * rows * cols, -1)
            rotary = (cos.reshape(1, -1, *cos.shape[2:]), sin.reshape(1, -1, *sin.shape[2:]))

        def target_half(hidden: Tensor) -> Tensor:
            return hidden.reshape(batch, pairs, rows, cols, -1)[:, :, :, : cols // 2].flatten(2, 3)

        frames = frames.to(target_latents.device)
        for layer, output in self.trunk.run(tokens, temb, context, rotary, readout=target_half):
            yield Residual(layer, output, frames)
