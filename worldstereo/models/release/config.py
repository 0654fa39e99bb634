"""The released WorldStereo 2.0 variants: what each ``config.json`` holds and the values the code forces."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from worldstereo.errors import ConfigurationError

Variant = Literal["camera", "memory", "memory-dmd"]
VARIANTS: tuple[Variant, ...] = ("camera", "memory", "memory-dmd")
LatentCondMode = Literal["full_vae", "first_frame_only"]

# One clip is 21 keyframes: one latent frame each.
RELEASE_FRAMES = 21


def variant_folder(variant: Variant) -> str:
    """Subfolder of the release directory holding ``variant`` (``worldstereo-<variant>``)."""
    return f"worldstereo-{variant}"


@dataclass(frozen=True)
class ControlNetConfig:
    """``controlnet_cfg`` of a variant (keys as in the file). ``update_ref`` etc. only exist for memory variants."""

    dim: int
    num_heads: int
    ffn_dim: int
    num_layers: int
    time_embed_dim: int
    conv_out_dim: int
    add_channels: int = 1
    mid_channels: int = 64
    mask_downsample: int = 4
    interp: bool = False
    update_ref: bool | None = None
    ref_embedding: bool = False
    main_camera_embedding: bool = False
    camera_embedding_dim: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "controlnet_cfg") -> ControlNetConfig:
        known = {f.name for f in fields(cls)}
        required = ("dim", "num_heads", "ffn_dim", "num_layers", "time_embed_dim", "conv_out_dim")
        missing = [name for name in required if name not in data]
        if missing:
            raise ConfigurationError(f"{where} lacks {', '.join(missing)}")
        return cls(**{key: value for key, value in data.items() if key in known})

    def check(self, backbone_dim: int, memory: bool, where: str = "controlnet_cfg") -> None:
        """The values the released forward pass forces (RELEASED_MODEL §1.3)."""
        rules = [
            (self.conv_out_dim == backbone_dim, f"conv_out_dim must equal the backbone width {backbone_dim}"),
            (self.time_embed_dim == backbone_dim, f"time_embed_dim must equal the backbone width {backbone_dim}"),
            (self.add_channels == 7, "add_channels must be 7 (render mask + 6 Plücker channels)"),
            (self.mask_downsample == 1, "mask_downsample must be 1 (one mask frame per keyframe)"),
            (self.dim % self.num_heads == 0, f"dim {self.dim} must be a multiple of num_heads {self.num_heads}"),
            (self.mid_channels % 8 == 0, f"mid_channels {self.mid_channels} must be a multiple of 8"),
            (not memory or self.update_ref is not None, "memory variants need update_ref"),
            (
                not (memory and self.main_camera_embedding) or self.camera_embedding_dim == 7,
                "camera_embedding_dim must be 7 (quaternion + translation)",
            ),
        ]
        for ok, message in rules:
            if not ok:
                raise ConfigurationError(f"{where}: {message}")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class DMDSchedule:
    """``dmd_start_steps``, ``dmd_end_steps``, ``gen_shift``, ``dmd_steps`` of the distilled variant."""

    start: float
    end: float
    shift: float
    steps: int


@dataclass(frozen=True)
class ReleaseConfig:
    """A variant's ``config.json`` (RELEASED_MODEL §1.3)."""

    variant: Variant
    base_model: str
    controlnet: ControlNetConfig
    nframe: int = RELEASE_FRAMES
    latent_cond_mode: LatentCondMode = "first_frame_only"
    negative_prompt: str = ""
    scale_map: tuple[tuple[int, int], ...] | None = None
    freeze_backbone: bool = True
    dmd: DMDSchedule | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def memory(self) -> bool:
        return self.variant != "camera"

    @classmethod
    def from_dict(cls, variant: Variant, data: Mapping[str, Any], where: str) -> ReleaseConfig:
        """Parse ``data`` read from ``where``; every missing required key is named."""
        for key in ("base_model", "controlnet_cfg"):
            if key not in data:
                raise ConfigurationError(f"{where} lacks the required key {key!r}")
        mode = data.get("latent_cond_mode", "first_frame_only")
        if mode not in ("full_vae", "first_frame_only"):
            raise ConfigurationError(f"{where}: latent_cond_mode must be full_vae or first_frame_only, not {mode!r}")
        nframe = int(data.get("nframe", RELEASE_FRAMES))
        if nframe != RELEASE_FRAMES:
            raise ConfigurationError(f"{where}: nframe must be {RELEASE_FRAMES}, got {nframe}")
        dmd = None
        if variant == "memory-dmd":
            keys = ("dmd_start_steps", "dmd_end_steps", "gen_shift", "dmd_steps")
            missing = [key for key in keys if key not in data]
            if missing:
                raise ConfigurationError(f"{where} lacks the DMD sampler keys {', '.join(missing)}")
            dmd = DMDSchedule(
                float(data["dmd_start_steps"]), float(data["dmd_end_steps"]), float(data["gen_shift"]),
                int(data["dmd_steps"]),
            )
        scale_map = data.get("scale_map")
        known = {"base_model", "controlnet_cfg", "nframe", "latent_cond_mode", "negative_prompt", "scale_map",
                 "freeze_backbone", "dmd_start_steps", "dmd_end_steps", "gen_shift", "dmd_steps"}
        return cls(
            variant=variant,
            base_model=str(data["base_model"]),
            controlnet=ControlNetConfig.from_dict(data["controlnet_cfg"], f"{where}: controlnet_cfg"),
            nframe=nframe,
            latent_cond_mode=mode,
            negative_prompt=str(data.get("negative_prompt") or ""),
            scale_map=None if scale_map is None else tuple((int(h), int(w)) for h, w in scale_map),
            freeze_backbone=bool(data.get("freeze_backbone", True)),
            dmd=dmd,
            extra={key: value for key, value in data.items() if key not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``config.json`` document (round-trips through :meth:`from_dict`)."""
        data: dict[str, Any] = {
            "base_model": self.base_model,
            "controlnet_cfg": self.controlnet.to_dict(),
            "nframe": self.nframe,
            "latent_cond_mode": self.latent_cond_mode,
            "negative_prompt": self.negative_prompt,
            "freeze_backbone": self.freeze_backbone,
        }
        if self.scale_map is not None:
            data["scale_map"] = [list(bucket) for bucket in self.scale_map]
        if self.dmd is not None:
            data |= {"dmd_start_steps": self.dmd.start, "dmd_end_steps": self.dmd.end,
                     "gen_shift": self.dmd.shift, "dmd_steps": self.dmd.steps}
        return data | self.extra


def tiny_controlnet(memory: bool, layers: int = 2) -> ControlNetConfig:
    """A released-layout ControlNet for :func:`wan_i2v_tiny` (width 32)."""
    extra = {"update_ref": True, "ref_embedding": True, "main_camera_embedding": True, "camera_embedding_dim": 7}
    return ControlNetConfig(
        dim=16, num_heads=2, ffn_dim=32, num_layers=layers, time_embed_dim=32, conv_out_dim=32, add_channels=7,
        mid_channels=8, mask_downsample=1, **(extra if memory else {}),
    )


def release_controlnet(memory: bool) -> ControlNetConfig:
    """The ``memory`` ControlNet config of ``released_2_0_manifest.json`` (width 1024, 20 blocks); without the
    reference/camera-token keys for the camera variant."""
    extra = {"update_ref": True, "ref_embedding": True, "main_camera_embedding": True, "camera_embedding_dim": 7}
    return ControlNetConfig(
        dim=1024, num_heads=16, ffn_dim=8192, num_layers=20, time_embed_dim=5120, conv_out_dim=5120, add_channels=7,
        mid_channels=256, mask_downsample=1, **(extra if memory else {}),
    )
