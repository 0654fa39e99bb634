"""Wan VAE in and out: frames in [0, 1] ↔ normalised latents (``(z - mean) / std``, as the backbone was trained)."""

from __future__ import annotations

from diffusers import AutoencoderKLWan
import torch
from torch import Tensor


def _statistics(vae: AutoencoderKLWan, like: Tensor) -> tuple[Tensor, Tensor]:
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = like.new_tensor(vae.config.latents_mean).view(shape)
    std = like.new_tensor(vae.config.latents_std).view(shape)
    return mean, std


def frames_to_video(frames: Tensor) -> Tensor:
    """``[N, H, W, 3]`` in [0, 1] → one clip ``[1, 3, N, H, W]`` in [-1, 1]."""
    return (frames.permute(3, 0, 1, 2) * 2 - 1).unsqueeze(0)


def encode_video(vae: AutoencoderKLWan, video: Tensor) -> Tensor:
    """``[B, 3, N, H, W]`` in [-1, 1] → normalised latents ``[B, z, 1 + (N-1)/4, H/8, W/8]`` (distribution mode)."""
    param = next(vae.parameters())
    latents = vae.encode(video.to(param.device, param.dtype)).latent_dist.mode().float()
    mean, std = _statistics(vae, latents)
    return (latents - mean) / std


def encode_images(vae: AutoencoderKLWan, images: Tensor) -> Tensor:
    """Each of ``images [F, H, W, 3]`` encoded as an independent image → ``[1, z, F, h, w]``."""
    clips = images.permute(0, 3, 1, 2).unsqueeze(2) * 2 - 1  # F one-frame clips [F, 3, 1, H, W]
    return encode_video(vae, clips).squeeze(2).transpose(0, 1).unsqueeze(0)


def decode_frames(vae: AutoencoderKLWan, latents: Tensor) -> Tensor:
    """Normalised latents ``[1, z, T, h, w]`` → frames ``[1 + 4(T-1), H, W, 3]`` in [0, 1] (float32)."""
    param = next(vae.parameters())
    mean, std = _statistics(vae, latents)
    video = vae.decode((latents * std + mean).to(param.device, param.dtype)).sample.float()
    return ((video[0].permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)


def decode_keyframes(vae: AutoencoderKLWan, latents: Tensor, chunk: int = 4) -> Tensor:
    """Normalised latents ``[1, z, F, h, w]``, each latent frame decoded alone (``chunk`` at a time) → frames
    ``[F, H, W, 3]`` in [0, 1] (float32)."""
    param = next(vae.parameters())
    mean, std = _statistics(vae, latents)
    clips = (latents * std + mean)[0].transpose(0, 1).unsqueeze(2)  # F one-frame clips [F, z, 1, h, w]
    frames = [
        vae.decode(part.to(param.device, param.dtype)).sample.float()[:, :, 0]
        for part in clips.split(chunk)
    ]
    return ((torch.cat(frames).permute(0, 2, 3, 1) + 1) / 2).clamp(0, 1)
