"""Architectures: Wan2.1-I2V-14B with WorldStereo's camera (GGM) and SSM branches, and a tiny twin for tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from worldstereo.models.wan import wan_i2v_14b

SSMAttention = Literal["pair", "joint"]


@dataclass(frozen=True)
class BranchConfig:
    """A control branch of ``num_layers`` Wan blocks, ``num_heads x head_dim`` wide.

    ``inject_layers[i]`` is the backbone block after which branch block ``i``'s output is added
    (strictly increasing; default ``i``).
    """

    num_layers: int
    num_heads: int
    head_dim: int
    ffn_dim: int
    inject_layers: tuple[int, ...] | None = None

    @property
    def dim(self) -> int:
        return self.num_heads * self.head_dim


@dataclass(frozen=True)
class WorldStereoConfig:
    """Constructor arguments of every component; ``backbone``/``vae`` are diffusers configs."""

    backbone: Mapping[str, Any]
    vae: Mapping[str, Any]
    camera: BranchConfig
    ssm: BranchConfig
    camera_mid_channels: int = 256
    ssm_attention: SSMAttention = "pair"
    rope_max_seq_len: int = 1024
    eps: float = 1e-6

    def __post_init__(self) -> None:
        object.__setattr__(self, "backbone", MappingProxyType(dict(self.backbone)))
        object.__setattr__(self, "vae", MappingProxyType(dict(self.vae)))

    @property
    def latent_channels(self) -> int:
        return int(self.vae.get("z_dim", 16))

    @property
    def temporal_compression(self) -> int:
        return int(self.vae.get("scale_factor_temporal", 4))

    @property
    def spatial_compression(self) -> int:
        return int(self.vae.get("scale_factor_spatial", 8))

    @property
    def backbone_dim(self) -> int:
        return int(self.backbone["num_attention_heads"]) * int(self.backbone["attention_head_dim"])

    def _branch_kwargs(self, branch: BranchConfig) -> dict[str, Any]:
        return {
            "backbone_dim": self.backbone_dim,
            "dim": branch.dim,
            "num_heads": branch.num_heads,
            "ffn_dim": branch.ffn_dim,
            "num_layers": branch.num_layers,
            "inject_layers": branch.inject_layers,
            "patch_size": tuple(self.backbone.get("patch_size", (1, 2, 2))),
            "eps": self.eps,
            "rope_max_seq_len": self.rope_max_seq_len,
        }

    def camera_kwargs(self) -> dict[str, Any]:
        """Arguments of :class:`~worldstereo.models.paper.camera_controlnet.CameraControlNet`."""
        # noisy latents + Wan's frame mask (one channel per frame of a latent group) + cache latents
        in_channels = 2 * self.latent_channels + self.temporal_compression
        return self._branch_kwargs(self.camera) | {
            "in_channels": in_channels,
            "condition_mid_channels": self.camera_mid_channels,
            "temporal_compression": self.temporal_compression,
            "spatial_compression": self.spatial_compression,
        }

    def ssm_kwargs(self) -> dict[str, Any]:
        """Arguments of :class:`~worldstereo.models.paper.ssm_branch.SpatialStereoMemory`."""
        return self._branch_kwargs(self.ssm) | {
            "latent_channels": self.latent_channels,
            "attention": self.ssm_attention,
        }


def full_config(ssm_attention: SSMAttention = "pair") -> WorldStereoConfig:
    """Wan2.1-I2V-14B (diffusers layout) with Uni3C-sized 20-block branches (width 1024)."""
    backbone = wan_i2v_14b()
    vae = {
        "base_dim": 96,
        "z_dim": 16,
        "dim_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "attn_scales": [],
        "temperal_downsample": [False, True, True],
    }
    branch = BranchConfig(num_layers=20, num_heads=16, head_dim=64, ffn_dim=8192)
    return WorldStereoConfig(backbone, vae, camera=branch, ssm=branch, ssm_attention=ssm_attention)


def tiny_config(
    backbone_layers: int = 4, branch_layers: int = 2, ssm_attention: SSMAttention = "pair"
) -> WorldStereoConfig:
    """Same classes, a few thousand parameters per block: for tests and CPU benchmarks."""
    backbone = {
        "patch_size": (1, 2, 2),
        "num_attention_heads": 2,
        "attention_head_dim": 16,
        "in_channels": 36,
        "out_channels": 16,
        "text_dim": 16,
        "freq_dim": 16,
        "ffn_dim": 64,
        "num_layers": backbone_layers,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-6,
        "image_dim": 8,
        "added_kv_proj_dim": 32,
        "rope_max_seq_len": 1024,
    }
    vae = {
        "base_dim": 8,
        "z_dim": 16,
        "dim_mult": [1, 2, 4, 4],
        "num_res_blocks": 1,
        "attn_scales": [],
        "temperal_downsample": [False, True, True],
    }
    branch = BranchConfig(num_layers=branch_layers, num_heads=2, head_dim=8, ffn_dim=32)
    return WorldStereoConfig(
        backbone, vae, camera=branch, ssm=branch, camera_mid_channels=8, ssm_attention=ssm_attention
    )
