"""The released WorldStereo 2.0 transformer: Wan2.1-I2V + GGM ControlNet (all variants) + a reference token
stream inside every backbone block and per-frame camera tokens (memory variants) (RELEASED_MODEL §2-§4).

State-dict keys equal the release's: the backbone's ``blocks.*`` etc., ``controlnet.*``, and for memory
variants ``camera_embedding.{0,2,4}`` and ``ref_index_embedding`` when configured.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import WanTransformer3DModel
from diffusers.models.transformers.transformer_wan import WanTransformerBlock
from torch import Tensor, nn

from worldstereo.models.release.config import RELEASE_FRAMES, ControlNetConfig
from worldstereo.models.release.controlnet import ReleaseControlNet
from worldstereo.models.rope import PositionalRotaryEmbed, reference_positions
from worldstereo.models.wan import zero_module

Rotary = tuple[Tensor, Tensor]


def _joint_rotary(first: Rotary, second: Rotary) -> Rotary:
    return torch.cat([first[0], second[0]], dim=1), torch.cat([first[1], second[1]], dim=1)


class ReferenceBlock(WanTransformerBlock):
    """A Wan block (same parameters) that also carries reference tokens: one joint self-attention over
    ``[references; targets]``, cross-attention for targets only, the same FFN and modulation for both."""

    def joint(
        self, hidden: Tensor, refs: Tensor, context: Tensor, temb: Tensor, rotary: Rotary, ref_rotary: Rotary
    ) -> tuple[Tensor, Tensor]:
        """``hidden [B, L, D]``, ``refs [B, Lr, D]``, ``temb [B, 6, D]`` → updated ``(hidden, refs)``."""
        shift, scale, gate, c_shift, c_scale, c_gate = (self.scale_shift_table + temb.float()).chunk(6, dim=1)
        count = refs.shape[1]
        both = torch.cat([refs, hidden], dim=1)
        normed = (self.norm1(both.float()) * (1 + scale) + shift).type_as(both)
        attended = self.attn1(normed, None, None, _joint_rotary(ref_rotary, rotary))
        both = (both.float() + attended * gate).type_as(both)
        refs, hidden = both[:, :count], both[:, count:]
        hidden = hidden + self.attn2(self.norm2(hidden.float()).type_as(hidden), context, None, None)
        both = torch.cat([refs, hidden], dim=1)
        normed = (self.norm3(both.float()) * (1 + c_scale) + c_shift).type_as(both)
        both = (both.float() + self.ffn(normed).float() * c_gate).type_as(both)
        return both[:, count:], both[:, :count]


def autocast(device: torch.device, dtype: torch.dtype) -> torch.autocast:
    """The release's precision: a half-precision backbone runs under autocast to its dtype (float32-kept parts
    compute their matmuls in half precision, norms in float32); float32 runs without it."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype in (torch.bfloat16, torch.float16))


def camera_mlp(in_dim: int, dim: int) -> nn.Sequential:
    """Per-frame camera token: Linear → SiLU → Linear → SiLU → zero Linear (keys ``0, 2, 4``)."""
    return nn.Sequential(
        nn.Linear(in_dim, dim // 2), nn.SiLU(), nn.Linear(dim // 2, dim), nn.SiLU(), zero_module(nn.Linear(dim, dim))
    )


@dataclass(frozen=True)
class ControlInputs:
    """GGM inputs: keyframe latents of the cache renders and the pixel-rate ``[mask; Plücker]``."""

    render_latents: Tensor  # [B, z, F, h, w]
    condition: Tensor  # [B, 7, F, H, W] (1 = hole) + 6 Plücker channels


@dataclass(frozen=True)
class ReferenceInputs:
    """Memory inputs: clean keyframe latents of the references and their target slots."""

    latents: Tensor  # [B, z, R, h, w]
    ref_index: Tensor  # [R] target slot 0..19 (RoPE frame ref_index + 1)
    camera_tokens: Tensor | None = None  # [B, R, 7]


class ReleaseTransformer(WanTransformer3DModel):
    """``WanTransformer3DModel`` + ``controlnet`` (+ ``camera_embedding``/``ref_index_embedding`` and reference
    blocks for memory variants). Built from the Wan config dict and the variant's ``controlnet_cfg``.

    As released, the ControlNet and the camera embedding stay float32 beside a half-precision backbone (they run
    under the caller's autocast, see :func:`autocast`)."""

    _keep_in_fp32_modules = [*WanTransformer3DModel._keep_in_fp32_modules, "controlnet", "camera_embedding",
                             "ref_index_embedding"]

    def __init__(self, wan_config: dict[str, Any], controlnet: ControlNetConfig, *, memory: bool) -> None:
        config = {key: value for key, value in wan_config.items() if not key.startswith("_")}
        num_layers = int(config.pop("num_layers", 40))
        super().__init__(num_layers=0, **config)
        self.register_to_config(num_layers=num_layers)
        dim = self.config.num_attention_heads * self.config.attention_head_dim
        controlnet.check(dim, memory)
        self.memory = memory
        self.controlnet_cfg = controlnet
        head_dim = self.config.attention_head_dim
        self.rope = PositionalRotaryEmbed(head_dim, tuple(self.config.patch_size), self.config.rope_max_seq_len)
        block = ReferenceBlock if memory else WanTransformerBlock
        args = (dim, self.config.ffn_dim, self.config.num_attention_heads, self.config.qk_norm,
                self.config.cross_attn_norm, self.config.eps, self.config.added_kv_proj_dim)
        self.blocks = nn.ModuleList(block(*args) for _ in range(num_layers))
        if memory and controlnet.ref_embedding:
            self.ref_index_embedding = zero_module(nn.Embedding(RELEASE_FRAMES, dim))  # built, unused (as released)
        self.camera_embedding = (
            camera_mlp(controlnet.camera_embedding_dim, dim) if memory and controlnet.main_camera_embedding else None
        )
        self.controlnet = ReleaseControlNet(controlnet, self.config.in_channels)
        self.controlnet.copy_patch_embedding(self.patch_embedding)

    @property
    def uses_camera_tokens(self) -> bool:
        return self.camera_embedding is not None

    def _tokens(self, video: Tensor) -> Tensor:
        return self.patch_embedding(video.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)

    def _add_camera(self, tokens: Tensor, camera_tokens: Tensor | None, per_frame: int) -> Tensor:
        if self.camera_embedding is None or camera_tokens is None:
            return tokens
        embedded = self.camera_embedding(camera_tokens.to(self.camera_embedding[0].weight.dtype))  # [B, F, D]
        return tokens + embedded.repeat_interleave(per_frame, dim=1).to(tokens.dtype)

    def reference_tokens(self, references: ReferenceInputs, grid: tuple[int, int]) -> tuple[Tensor, Rotary]:
        """Clean latents in the I2V layout ``[z; ones; z]`` through the shared patch embedding, and their RoPE."""
        z = references.latents
        ones = z.new_ones(z.shape[0], self.config.in_channels - 2 * z.shape[1], *z.shape[2:])
        tokens = self._tokens(torch.cat([z, ones, z], dim=1))
        tokens = self._add_camera(tokens, references.camera_tokens, grid[0] * grid[1])
        cos, sin = self.rope.at(reference_positions(references.ref_index, *grid))
        return tokens, (cos.unsqueeze(0), sin.unsqueeze(0))

    def forward(
        self,
        hidden_states: Tensor,
        timestep: Tensor,
        encoder_hidden_states: Tensor,
        encoder_hidden_states_image: Tensor | None = None,
        control: ControlInputs | None = None,
        references: ReferenceInputs | None = None,
        camera_tokens: Tensor | None = None,
    ) -> Tensor:
        """``hidden_states [B, 36, F, h, w]`` = ``[x_t; mask; image latents]`` → velocity ``[B, z, F, h, w]``.

        Without ``control`` and ``references`` this is exactly the Wan backbone."""
        batch, _, frames, height, width = hidden_states.shape
        p_t, p_h, p_w = self.config.patch_size
        grid = (frames // p_t, height // p_h, width // p_w)
        rotary = self.rope(hidden_states)
        hidden = self._tokens(hidden_states).contiguous()
        temb, projection, text, image = self.condition_embedder(
            timestep, encoder_hidden_states, encoder_hidden_states_image
        )
        projection = projection.unflatten(1, (6, -1))
        context = text if image is None else torch.cat([image, text], dim=1)
        hidden = self._add_camera(hidden, camera_tokens, grid[1] * grid[2])
        residuals: Iterator[Tensor] = iter(())
        if control is not None:
            latent_channels = control.render_latents.shape[1]
            inputs = torch.cat([hidden_states[:, : -latent_channels], control.render_latents.to(hidden_states)], 1)
            residuals = self.controlnet.residuals(inputs, control.condition, temb)
        refs = ref_rotary = None
        if references is not None:
            if not self.memory:
                raise ValueError("the camera variant takes no references")
            refs, ref_rotary = self.reference_tokens(references, grid[1:])
        original_refs = refs
        for block in self.blocks:
            if refs is None:
                hidden = block(hidden, context, projection, rotary)
            else:
                hidden, updated = block.joint(hidden, refs, context, projection, rotary, ref_rotary)
                refs = updated if self.controlnet_cfg.update_ref else original_refs
            residual = next(residuals, None)
            if residual is not None:
                hidden = hidden + residual.to(hidden.dtype)
        shift, scale = (self.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        hidden = (self.norm_out(hidden.float()) * (1 + scale) + shift).type_as(hidden)
        hidden = self.proj_out(hidden)
        hidden = hidden.reshape(batch, *grid, p_t, p_h, p_w, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return hidden.flatten(6, 7).flatten(4, 5).flatten(2, 3)
