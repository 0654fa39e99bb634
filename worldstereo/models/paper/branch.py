"""What the two control branches share: a trunk of Wan blocks with zero-initialised read-outs, and residuals."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from diffusers.models.transformers.transformer_wan import WanTransformerBlock
from torch import Tensor, nn

from worldstereo.errors import ConfigurationError
from worldstereo.models.rope import PositionalRotaryEmbed
from worldstereo.models.wan import zero_module

# Parameters that stay float32 when a branch runs in half precision (as in Wan's own blocks).
KEEP_FP32 = ["scale_shift_table", "norm1", "norm2", "norm3"]


@dataclass(frozen=True)
class Residual:
    """A branch output added to the backbone tokens after backbone block ``layer``.

    ``tokens`` is ``[B, L, D]`` for every backbone token, or ``[B, F, S, D]`` for the ``S`` tokens of each
    latent frame in ``frames [F]``.
    """

    layer: int
    tokens: Tensor
    frames: Tensor | None = None

    def add_to(self, hidden: Tensor) -> Tensor:
        tokens = self.tokens.to(hidden.dtype)
        if self.frames is None:
            return hidden + tokens
        per_frame = hidden.unflatten(1, (-1, tokens.shape[2]))
        return per_frame.index_add(1, self.frames, tokens).flatten(1, 2)


def resolve_inject_layers(inject_layers: Sequence[int] | None, num_layers: int) -> tuple[int, ...]:
    """Default ``i -> i``; otherwise one strictly increasing backbone index per branch block."""
    layers = tuple(range(num_layers)) if inject_layers is None else tuple(int(i) for i in inject_layers)
    if len(layers) != num_layers or any(b <= a for a, b in zip(layers, layers[1:])) or min(layers, default=0) < 0:
        raise ConfigurationError(
            f"inject_layers must give {num_layers} strictly increasing backbone block indices, got {layers}"
        )
    return layers


class BranchTrunk(nn.Module):
    """Wan blocks modulated by the backbone's time embedding and attending to its (projected) context.

    Block ``i``'s tokens go through a zero-initialised ``Linear(dim, backbone_dim)`` read-out.
    """

    def __init__(
        self,
        backbone_dim: int,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        num_layers: int,
        inject_layers: Sequence[int] | None,
        patch_size: Sequence[int],
        eps: float,
        rope_max_seq_len: int,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigurationError(f"branch width {dim} is not a multiple of its {num_heads} heads")
        self.inject_layers = resolve_inject_layers(inject_layers, num_layers)
        self.rope = PositionalRotaryEmbed(dim // num_heads, tuple(patch_size), rope_max_seq_len)
        self.time_proj = nn.Linear(backbone_dim, 6 * dim)
        self.context_proj = nn.Linear(backbone_dim, dim)
        self.blocks = nn.ModuleList(
            WanTransformerBlock(dim, ffn_dim, num_heads, "rms_norm_across_heads", True, eps)
            for _ in range(num_layers)
        )
        self.proj_out = nn.ModuleList(zero_module(nn.Linear(dim, backbone_dim)) for _ in range(num_layers))

    def run(
        self,
        tokens: Tensor,
        temb: Tensor,
        context: Tensor,
        rotary: tuple[Tensor, Tensor],
        readout: Callable[[Tensor], Tensor] = lambda tokens: tokens,
    ) -> Iterator[tuple[int, Tensor]]:
        """Yield ``(backbone layer, projected read-out)`` block by block, lazily.

        ``temb [B, backbone_dim]`` and ``context [B, M, backbone_dim]`` must already match ``tokens``'s batch.
        """
        dtype = self.time_proj.weight.dtype
        modulation = self.time_proj(F.silu(temb.to(dtype))).unflatten(1, (6, -1))
        context = self.context_proj(context.to(dtype))
        tokens = tokens.to(dtype)
        for layer, block, project in zip(self.inject_layers, self.blocks, self.proj_out):
            tokens = block(tokens, context, modulation, rotary)
            yield layer, project(readout(tokens))
