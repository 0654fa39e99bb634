"""Wan's 3D rotary positions, evaluable at arbitrary token positions (for stitched target|reference pairs).

A stitched pair is one image twice as wide: the target half keeps the backbone's position of its token
(latent frame ``t``, row ``y``, column ``x``) and the reference half continues the width axis
(``t``, ``y``, ``w + x``). Rows and frame index therefore match across the seam, as in a rectified stereo
pair, and the target half's positions are exactly those of the backbone tokens it is added to. Because the
frame index is constant within a pair, it drops out of per-pair attention; in joint attention it tells the
pairs apart.
"""

from __future__ import annotations

import torch
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed
from torch import Tensor


class PositionalRotaryEmbed(WanRotaryPosEmbed):
    """``WanRotaryPosEmbed`` plus :meth:`at` for explicit integer ``(t, y, x)`` positions."""

    def at(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """``positions [..., L, 3]`` → ``(cos, sin)``, each ``[..., L, 1, head_dim]`` (Wan's layout)."""
        sizes = [self.t_dim, self.h_dim, self.w_dim]
        positions = positions.to(self.freqs_cos.device)

        def gather(table: Tensor) -> Tensor:
            parts = table.split(sizes, dim=1)
            return torch.cat([part[positions[..., axis]] for axis, part in enumerate(parts)], dim=-1)

        return gather(self.freqs_cos).unsqueeze(-2), gather(self.freqs_sin).unsqueeze(-2)


def grid_positions(frames: Tensor, height: int, width: int) -> Tensor:
    """Token positions ``[F, height, width, 3]`` of a patch grid whose frame ``f`` sits at ``frames[f]``."""
    ys = torch.arange(height, device=frames.device)
    xs = torch.arange(width, device=frames.device)
    t, y, x = torch.meshgrid(frames.long(), ys, xs, indexing="ij")
    return torch.stack([t, y, x], dim=-1)


def stitched_positions(frames: Tensor, height: int, width: int) -> Tensor:
    """Positions ``[F, height * 2 * width, 3]`` of stitched pairs: target columns ``[0, w)``, reference ``[w, 2w)``."""
    return grid_positions(frames, height, 2 * width).flatten(1, 2)


def reference_positions(ref_index: Tensor, height: int, width: int) -> Tensor:
    """Positions ``[R*height*width, 3]`` of reference tokens in the release: reference ``k`` sits right of target
    latent frame ``ref_index[k] + 1``, as if width-stitched to it: ``(ref_index[k] + 1, y, width + x)``."""
    positions = grid_positions(ref_index.long() + 1, height, width)
    return (positions + positions.new_tensor([0, 0, width])).flatten(0, 2)
