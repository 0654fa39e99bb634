"""WorldStereo video model: conditions in, frames out (paper Sec. 3.1-3.4)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from torch import Tensor

from worldstereo.config import Settings
from worldstereo.errors import ConfigurationError, InvalidInputError
from worldstereo.models.codec import decode_frames
from worldstereo.models.loading import Placement, build, load_component, require_component
from worldstereo.models.paper.camera_controlnet import CameraControlNet
from worldstereo.models.paper.conditioning import Conditioning, build_conditioning
from worldstereo.models.paper.config import WorldStereoConfig
from worldstereo.models.paper.ssm_branch import SpatialStereoMemory
from worldstereo.models.paper.transformer import WorldStereoTransformer
from worldstereo.models.samplers import Denoiser, DMDSampler, FlowMatchingSampler
from worldstereo.models.wan import WAN_TEXT_TOKENS

SamplerName = Literal["dmd", "flow"]
DEFAULT_STEPS = {"dmd": 4, "flow": 40}

# Subfolders of a model directory; the first two are Wan2.1-I2V's diffusers layout.
TRANSFORMER, VAE, CAMERA, SSM = "transformer", "vae", "camera", "ssm"


class WorldStereoModel:
    """Wan2.1-I2V backbone + camera ControlNet (GGM) + SSM branch, with the Wan VAE.

    The transformer runs in ``dtype``; the VAE in float32. Text and image-encoder embeddings are inputs
    (``prompt_embeds [512, text_dim]``, ``image_embeds [K, image_dim]``), computed once per scene elsewhere.
    """

    def __init__(
        self,
        transformer: WorldStereoTransformer,
        vae: AutoencoderKLWan,
        *,
        device: torch.device | str = "cpu",
        offload: bool = False,
    ) -> None:
        self.transformer = transformer
        self.vae = vae
        self.placement = Placement(device, offload, [transformer, vae])

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        config: WorldStereoConfig,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        offload: bool = False,
    ) -> WorldStereoModel:
        """Randomly initialised backbone and VAE, zero-initialised branches (``device="meta"`` allocates nothing)."""
        home = "cpu" if offload else device
        backbone = build(WanTransformer3DModel, dict(config.backbone), dtype=dtype, device=home)
        camera = build(CameraControlNet, config.camera_kwargs(), dtype=dtype, device=home)
        ssm = build(SpatialStereoMemory, config.ssm_kwargs(), dtype=dtype, device=home)
        vae = build(AutoencoderKLWan, dict(config.vae), dtype=torch.float32, device=home)
        return cls(WorldStereoTransformer(backbone, camera, ssm), vae, device=device, offload=offload)

    @classmethod
    def from_pretrained(
        cls,
        wan_dir: str | Path,
        branches_dir: str | Path | None = None,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.bfloat16,
        offload: bool = False,
    ) -> WorldStereoModel:
        """Backbone from ``wan_dir/{transformer,vae}`` (Wan2.1-I2V in diffusers' layout; for ``sampler="dmd"``
        its transformer is the DMD-distilled one), branches from ``branches_dir/{camera,ssm}`` (default:
        ``wan_dir``). Local files only; every directory is checked before anything is loaded."""
        wan_dir = Path(wan_dir)
        branches_dir = wan_dir if branches_dir is None else Path(branches_dir)
        wan, branches = "WORLDSTEREO_MODELS__WAN_I2V", "WORLDSTEREO_MODELS__WORLDSTEREO_BRANCHES"
        parts = {
            TRANSFORMER: (WanTransformer3DModel, wan_dir, "Wan2.1-I2V transformer", wan, dtype),
            VAE: (AutoencoderKLWan, wan_dir, "Wan2.1 VAE", wan, torch.float32),
            CAMERA: (CameraControlNet, branches_dir, "camera ControlNet weights", branches, dtype),
            SSM: (SpatialStereoMemory, branches_dir, "SSM branch weights", branches, dtype),
        }
        for name, (_, root, what, setting, _) in parts.items():
            require_component(root / name, what, setting)
        home = "cpu" if offload else device
        loaded = {
            name: load_component(kind, root / name, dtype=kind_dtype, device=home)
            for name, (kind, root, _, _, kind_dtype) in parts.items()
        }
        transformer = WorldStereoTransformer(loaded[TRANSFORMER], loaded[CAMERA], loaded[SSM])
        return cls(transformer, loaded[VAE], device=device, offload=offload)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, dtype: torch.dtype = torch.bfloat16, offload: bool = False
    ) -> WorldStereoModel:
        """Paths from ``settings.models`` (``WORLDSTEREO_MODELS__WAN_I2V``, ``..._WORLDSTEREO_BRANCHES``)."""
        paths = settings.models
        if paths.wan_i2v is None:
            raise ConfigurationError(
                "no Wan2.1-I2V weights configured: set WORLDSTEREO_MODELS__WAN_I2V to a local diffusers-format "
                "directory with transformer/ and vae/ (and WORLDSTEREO_MODELS__WORLDSTEREO_BRANCHES to the "
                "directory with camera/ and ssm/ if they live elsewhere)"
            )
        return cls.from_pretrained(
            paths.wan_i2v, paths.worldstereo_branches, device=settings.resolved_device(), dtype=dtype, offload=offload
        )

    def save_pretrained(self, directory: str | Path, max_shard_size: int | str = "10GB") -> None:
        """``transformer/``, ``vae/``, ``camera/``, ``ssm/``: JSON config + safetensors (sharded above
        ``max_shard_size``) each."""
        directory = Path(directory)
        transformer = self.transformer
        components = {
            TRANSFORMER: transformer.backbone, VAE: self.vae, CAMERA: transformer.camera, SSM: transformer.ssm
        }
        for name, component in components.items():
            if component is not None:
                component.save_pretrained(directory / name, safe_serialization=True, max_shard_size=max_shard_size)

    # --- properties ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.placement.device

    @property
    def size_multiple(self) -> int:
        """Frame height and width must be multiples of this (VAE stride x patch size)."""
        patch = self.transformer.backbone.config.patch_size
        return int(self.vae.config.scale_factor_spatial) * max(patch[1], patch[2])

    # --- generation ---------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(
        self,
        image: Tensor,
        cache_renders: Tensor,
        render_masks: Tensor,
        plucker: Tensor,
        *,
        image_embeds: Tensor | None = None,
        references: Tensor | None = None,
        pointmaps: tuple[Tensor, Tensor] | None = None,
        target_indices: Sequence[int] | Tensor | None = None,
    ) -> Conditioning:
        """Pixels → :class:`Conditioning` (see :func:`~worldstereo.models.paper.conditioning.build_conditioning`)."""
        if self.transformer.backbone.config.image_dim is not None and image_embeds is None:
            raise InvalidInputError("this I2V backbone needs image_embeds (image-encoder tokens of the input image)")
        if references is not None and self.transformer.ssm is None:
            raise ConfigurationError("references were given but the model has no SSM branch")
        self.placement.use(self.vae)
        return build_conditioning(
            self.vae, image, cache_renders, render_masks, plucker, image_embeds=image_embeds,
            references=references, pointmaps=pointmaps, target_indices=target_indices, multiple=self.size_multiple,
        )

    def _prompt(self, embeds: Tensor, name: str) -> Tensor:
        """``[L, D]`` or ``[1, L, D]`` → ``[1, L, D]`` on the device; I2V backbones need exactly 512 text tokens."""
        config = self.transformer.backbone.config
        prompt = embeds.unsqueeze(0) if embeds.ndim == 2 else embeds
        if prompt.ndim != 3 or prompt.shape[0] != 1 or prompt.shape[2] != config.text_dim:
            raise InvalidInputError(f"{name} must be [L, {config.text_dim}], got {tuple(embeds.shape)}")
        if config.image_dim is not None and prompt.shape[1] != WAN_TEXT_TOKENS:
            raise InvalidInputError(f"{name} must hold {WAN_TEXT_TOKENS} tokens, got {prompt.shape[1]}")
        return prompt.to(self.device)

    def _sampler(self, sampler: SamplerName, steps: int | None, guidance: float, shift: float,
                 negative_prompt_embeds: Tensor | None) -> DMDSampler | FlowMatchingSampler:
        if sampler not in DEFAULT_STEPS:
            raise ConfigurationError(f"unknown sampler {sampler!r}: use 'dmd' or 'flow'")
        steps = DEFAULT_STEPS[sampler] if steps is None else steps
        if sampler == "dmd":
            return DMDSampler(steps=steps, shift=shift)
        flow = FlowMatchingSampler(steps=steps, guidance=guidance, shift=shift)
        if flow.guided and negative_prompt_embeds is None:
            raise InvalidInputError(f"guidance {guidance} needs negative_prompt_embeds")
        return flow

    def denoiser(self, conditioning: Conditioning, prompt_embeds: Tensor) -> Denoiser:
        """The velocity function ``(latents, timestep) -> v`` for one prompt embedding ``[512, text_dim]``."""
        prompt = self._prompt(prompt_embeds, "prompt_embeds")

        def velocity(latents: Tensor, timestep: Tensor) -> Tensor:
            return self.transformer(latents, timestep, prompt.expand(latents.shape[0], -1, -1), conditioning)

        return velocity

    @torch.inference_mode()
    def sample(
        self,
        conditioning: Conditioning,
        prompt_embeds: Tensor,
        *,
        negative_prompt_embeds: Tensor | None = None,
        sampler: SamplerName = "dmd",
        steps: int | None = None,
        guidance: float = 5.0,
        shift: float = 5.0,
        seed: int = 0,
    ) -> Tensor:
        """Denoised latents ``[1, z, T, h, w]``. ``"dmd"`` expects a DMD-distilled backbone (4 steps, no CFG);
        ``"flow"`` runs ``steps`` guided steps (2 calls each when ``guidance != 1``)."""
        schedule = self._sampler(sampler, steps, guidance, shift, negative_prompt_embeds)
        conditional = self.denoiser(conditioning, prompt_embeds)
        self.placement.use(self.transformer)
        generator = torch.Generator("cpu").manual_seed(seed)
        shape = (1, self.vae.config.z_dim, *conditioning.latent_shape)
        noise = torch.randn(shape, generator=generator, dtype=torch.float32).to(self.device)
        if isinstance(schedule, DMDSampler):
            return schedule.sample(noise, conditional)
        unconditional = self.denoiser(conditioning, negative_prompt_embeds) if schedule.guided else None
        return schedule.sample(noise, conditional, unconditional)

    @torch.inference_mode()
    def decode(self, latents: Tensor) -> Tensor:
        """Latents → frames ``[N, H, W, 3]`` in [0, 1] (float32, on the execution device)."""
        self.placement.use(self.vae)
        frames = decode_frames(self.vae, latents)
        self.placement.park()
        return frames

    def generate(
        self,
        image: Tensor,
        cache_renders: Tensor,
        render_masks: Tensor,
        plucker: Tensor,
        prompt_embeds: Tensor,
        *,
        negative_prompt_embeds: Tensor | None = None,
        image_embeds: Tensor | None = None,
        references: Tensor | None = None,
        pointmaps: tuple[Tensor, Tensor] | None = None,
        target_indices: Sequence[int] | Tensor | None = None,
        sampler: SamplerName = "dmd",
        steps: int | None = None,
        guidance: float = 5.0,
        shift: float = 5.0,
        seed: int = 0,
    ) -> Tensor:
        """One camera-guided clip of ``N = 1 + 4k`` frames ``[N, H, W, 3]`` in [0, 1].

        ``image [H, W, 3]`` in [0, 1] is frame 0; ``cache_renders [N, H, W, 3]`` (frame 0 the image itself),
        ``render_masks [N, H, W]`` (1 = covered by the cache) and ``plucker [N, 6, H, W]`` drive the camera
        branch. The SSM branch runs when ``references [F, H, W, 3]``, colourised ``pointmaps`` (target,
        reference) ``[F, H, W, 3]`` in [0, 1] and the targets' pixel ``target_indices [F]`` are given.
        """
        self._sampler(sampler, steps, guidance, shift, negative_prompt_embeds)  # fail before any encoding
        self._prompt(prompt_embeds, "prompt_embeds")
        if negative_prompt_embeds is not None:
            self._prompt(negative_prompt_embeds, "negative_prompt_embeds")
        conditioning = self.encode(
            image, cache_renders, render_masks, plucker, image_embeds=image_embeds, references=references,
            pointmaps=pointmaps, target_indices=target_indices,
        )
        latents = self.sample(
            conditioning, prompt_embeds, negative_prompt_embeds=negative_prompt_embeds, sampler=sampler,
            steps=steps, guidance=guidance, shift=shift, seed=seed,
        )
        return self.decode(latents)

