"""The released WorldStereo 2.0 model at run time: a keyframe clip's conditions in, 21 (or ``F``) keyframes out.

Latent space: every frame is VAE-encoded and decoded alone (keyframes), latents normalised with the VAE's
mean/std (RELEASED_MODEL §3). Conditions: the I2V first-frame latent and mask, the GGM render latents plus the
pixel-rate ``[hole mask; Plücker]`` for the ControlNet, and for memory variants the references (clean latents,
RoPE slots, camera tokens).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler
from torch import Tensor

from worldstereo.errors import ConfigurationError, InvalidInputError
from worldstereo.models.codec import decode_keyframes, encode_images, encode_video, frames_to_video
from worldstereo.models.loading import Placement, load_component
from worldstereo.models.release.camera import camera_tokens, normalize_cameras, release_plucker
from worldstereo.models.release.config import ReleaseConfig, Variant
from worldstereo.models.release.loading import WAN_SETTING, load_release_transformer, read_release_config, wan_dir
from worldstereo.models.release.transformer import ControlInputs, ReferenceInputs, ReleaseTransformer, autocast
from worldstereo.models.samplers import DMDSampler, UniPCSampler
from worldstereo.models.wan import frame_mask

Sampler = DMDSampler | UniPCSampler


def make_sampler(config: ReleaseConfig, scheduler_config: dict, steps: int | None = None,
                 guidance: float = 5.0) -> Sampler:
    """The variant's sampler: flow DMD with its ``dmd_*``/``gen_shift`` (no CFG), else the base model's UniPC
    scheduler, 40 steps, CFG ``guidance``."""
    if config.dmd is not None:
        schedule = config.dmd
        return DMDSampler(steps=steps or schedule.steps, shift=schedule.shift, start=schedule.start, end=schedule.end)
    return UniPCSampler(steps=steps or 40, guidance=guidance, scheduler_config=scheduler_config)


@dataclass(frozen=True)
class KeyframeClip:
    """One clip in the model's terms (``H, W`` multiples of 16; ``F`` keyframes)."""

    image: Tensor  # [H, W, 3] in [0, 1], the start frame
    renders: Tensor  # [F, H, W, 3] in [0, 1], cache renders (frame 0 is the image)
    holes: Tensor  # [F, H, W] 1 where no cache point landed (frame 0 all 0)
    w2c: Tensor  # [F, 4, 4] target cameras (OpenCV world-to-camera)
    intrinsics: Tensor  # [F, 3, 3] pixels at H x W
    reference_images: Tensor | None = None  # [R, H, W, 3] in [0, 1]
    reference_w2c: Tensor | None = None  # [R, 4, 4]
    ref_index: Tensor | None = None  # [R] target slot 0..F-2

    @property
    def frames(self) -> int:
        return len(self.renders)


def camera_conditions(clip: KeyframeClip, device: torch.device) -> tuple[Tensor, tuple[Tensor | None, Tensor | None]]:
    """The ControlNet's ``[1, 7, F, H, W]`` (hole mask, frame 0 none; Plücker rays of the normalised cameras) and
    the camera tokens of targets ``[F, 7]`` and references ``[R, 7]`` (``None`` without references)."""
    height, width = clip.image.shape[:2]
    condition = torch.empty((1, 7, clip.frames, height, width), device=device)
    condition[0, 0].copy_(clip.holes)
    condition[0, 0, 0] = 0
    release_plucker(normalize_cameras(clip.w2c.to(device)), clip.intrinsics.to(device), height, width,
                    out=condition[0, 1:].transpose(0, 1))  # the rays written in place, [F, 6, H, W] as a view
    if clip.reference_w2c is None or not len(clip.reference_w2c):
        return condition, (None, None)
    return condition, camera_tokens(clip.w2c.to(device), clip.reference_w2c.to(device))


@dataclass(frozen=True)
class ReleaseConditioning:
    image_condition: Tensor  # [1, 4 + z, F, h, w]
    image_embeds: Tensor  # [1, K, image_dim]
    control: ControlInputs
    references: ReferenceInputs | None
    camera_tokens: Tensor | None  # [1, F, 7]


class ReleaseModel:
    """Transformer (``dtype``) + VAE (float32) + the variant's sampler; text/CLIP embeddings are inputs."""

    def __init__(self, transformer: ReleaseTransformer, vae: AutoencoderKLWan, config: ReleaseConfig,
                 sampler: Sampler, *, device: torch.device | str = "cpu", offload: bool = False) -> None:
        self.transformer, self.vae, self.config, self.sampler = transformer, vae, config, sampler
        self.placement = Placement(device, offload, [transformer, vae])

    @classmethod
    def from_pretrained(cls, release_dir: Path | None, wan: Path | None, variant: Variant, *,
                        device: torch.device | str = "cpu", dtype: torch.dtype = torch.bfloat16,
                        offload: bool = False, steps: int | None = None, guidance: float = 5.0) -> ReleaseModel:
        """Local files only (see :mod:`worldstereo.models.release.loading`)."""
        config, folder = read_release_config(release_dir, variant)
        wan = wan_dir(wan)
        home = "cpu" if offload else device
        transformer = load_release_transformer(config, folder, wan, dtype=dtype, device=home)
        vae = load_component(AutoencoderKLWan, wan / "vae", dtype=torch.float32, device=home)
        scheduler_file = wan / "scheduler" / "scheduler_config.json"
        if not scheduler_file.is_file():
            raise ConfigurationError(f"{scheduler_file} does not exist: set {WAN_SETTING} to a Wan2.1-I2V directory")
        scheduler = dict(UniPCMultistepScheduler.from_config(json.loads(scheduler_file.read_text())).config)
        sampler = make_sampler(config, scheduler, steps, guidance)
        return cls(transformer, vae, config, sampler, device=device, offload=offload)

    @property
    def device(self) -> torch.device:
        return self.placement.device

    @property
    def guided(self) -> bool:
        return self.sampler.guided

    @property
    def size_multiple(self) -> int:
        patch = self.transformer.config.patch_size
        return int(self.vae.config.scale_factor_spatial) * max(patch[1], patch[2])

    # --- conditions ---------------------------------------------------------------------------------
    def _image_latents(self, image: Tensor, frames: int) -> Tensor:
        """I2V condition latents ``[1, z, F, h, w]`` (``latent_cond_mode``)."""
        grey = torch.full_like(image, 0.5)  # 0 in [-1, 1]
        if self.config.latent_cond_mode == "first_frame_only":
            first, blank = encode_images(self.vae, torch.stack([image, grey])).split(1, dim=2)
            return torch.cat([first, blank.expand(-1, -1, frames - 1, -1, -1)], dim=2)
        temporal = int(self.vae.config.scale_factor_temporal)
        clip = torch.cat([image[None], grey[None].expand(temporal * (frames - 1), -1, -1, -1)])
        return encode_video(self.vae, frames_to_video(clip))

    @torch.inference_mode()
    def encode(self, clip: KeyframeClip, image_embeds: Tensor) -> ReleaseConditioning:
        """VAE and camera conditions of one clip (on the execution device)."""
        height, width = clip.image.shape[:2]
        if height % self.size_multiple or width % self.size_multiple:
            raise InvalidInputError(f"clip size {height}x{width} must be a multiple of {self.size_multiple}")
        self.placement.use(self.vae)
        device = self.device

        def load(x: Tensor) -> Tensor:
            return x.to(device, torch.float32)

        image = load(clip.image)
        latents = self._image_latents(image, clip.frames)
        image_condition = torch.cat([frame_mask(latents, int(self.vae.config.scale_factor_temporal)), latents], 1)
        renders = load(clip.renders).clone()
        renders[0] = image
        render_latents = encode_images(self.vae, renders)
        condition, (targets, refs) = camera_conditions(clip, device)
        references = tokens = None
        if self.config.memory and clip.reference_images is not None and len(clip.reference_images):
            reference_latents = encode_images(self.vae, load(clip.reference_images))
            use_tokens = self.transformer.uses_camera_tokens
            references = ReferenceInputs(reference_latents, clip.ref_index.to(device).long(),
                                         refs[None] if use_tokens else None)
            tokens = targets[None] if use_tokens else None
        embeds = load(image_embeds).reshape(1, *image_embeds.shape[-2:])
        return ReleaseConditioning(image_condition, embeds, ControlInputs(render_latents, condition), references,
                                   tokens)

    # --- sampling -----------------------------------------------------------------------------------
    def denoiser(self, conditioning: ReleaseConditioning, prompt_embeds: Tensor):
        """``(x_t [1, z, F, h, w], t [1]) → velocity`` for one text embedding ``[512, text_dim]``."""
        dtype = self.transformer.dtype
        prompt = prompt_embeds.reshape(1, *prompt_embeds.shape[-2:]).to(self.device, dtype)
        image = conditioning.image_embeds.to(dtype)

        def velocity(latents: Tensor, timestep: Tensor) -> Tensor:
            hidden = torch.cat([latents, conditioning.image_condition], dim=1).to(dtype)
            with autocast(self.device, dtype):
                return self.transformer(hidden, timestep, prompt, image, conditioning.control,
                                        conditioning.references, conditioning.camera_tokens).float()

        return velocity

    @torch.inference_mode()
    def sample(self, conditioning: ReleaseConditioning, prompt_embeds: Tensor,
               negative_prompt_embeds: Tensor | None = None, seed: int = 0) -> Tensor:
        """Denoised latents ``[1, z, F, h, w]``; guided samplers need ``negative_prompt_embeds``."""
        if self.guided and negative_prompt_embeds is None:
            raise InvalidInputError("classifier-free guidance needs negative_prompt_embeds")
        self.placement.use(self.transformer)
        shape = (1, self.vae.config.z_dim, *conditioning.image_condition.shape[2:])
        noise = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed)).to(self.device)
        unconditional = self.denoiser(conditioning, negative_prompt_embeds) if self.guided else None
        return self.sampler.sample(noise, self.denoiser(conditioning, prompt_embeds), unconditional)

    @torch.inference_mode()
    def decode(self, latents: Tensor) -> Tensor:
        """Keyframes ``[F, H, W, 3]`` in [0, 1], each latent frame decoded alone."""
        self.placement.use(self.vae)
        frames = decode_keyframes(self.vae, latents)
        self.placement.park()
        return frames

    def generate(self, clip: KeyframeClip, prompt_embeds: Tensor, image_embeds: Tensor,
                 negative_prompt_embeds: Tensor | None = None, seed: int = 0) -> Tensor:
        conditioning = self.encode(clip, image_embeds)
        return self.decode(self.sample(conditioning, prompt_embeds, negative_prompt_embeds, seed))
