"""Pipeline inputs (pixels, masks, rays, references, pointmaps) → the latent-space conditioning of one clip."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKLWan
from torch import Tensor

from worldstereo.errors import InvalidInputError
from worldstereo.models.codec import encode_images, encode_video, frames_to_video
from worldstereo.models.paper.ssm_branch import stitch
from worldstereo.models.wan import frame_mask, latent_frame_indices


@dataclass(frozen=True)
class CameraGuidance:
    """Camera-branch (GGM) inputs."""

    render_latents: Tensor  # [1, z, T, h, w] VAE latents of the 3D cache rendered into the target cameras
    camera_condition: Tensor  # [1, 7, N, H, W] render mask (1 = covered by the cache) and Plücker rays


@dataclass(frozen=True)
class StereoMemory:
    """SSM-branch inputs for ``F`` target frames and their retrieved references."""

    reference_latents: Tensor  # [1, z, F, h, w], each reference encoded as an independent image
    pointmap_latents: Tensor  # [1, z, F, h, 2w], stitched [target; reference] colourised-pointmap latents
    frames: Tensor  # [F] latent frame of each target


@dataclass(frozen=True)
class Conditioning:
    """Everything the transformer needs besides the noisy latents, timestep and prompt."""

    image_condition: Tensor  # [1, 4 + z, T, h, w] Wan I2V: frame mask, then latents of [image, 0, ..., 0]
    image_embeds: Tensor | None  # [1, K, image_dim] image-encoder tokens of the input image
    camera: CameraGuidance | None
    memory: StereoMemory | None

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(T, h, w)`` of the generated latents."""
        return tuple(self.image_condition.shape[2:])


def camera_condition(render_masks: Tensor, plucker: Tensor) -> Tensor:
    """``[N, H, W]`` masks and ``[N, 6, H, W]`` rays → ``[1, 7, N, H, W]``."""
    return torch.cat([render_masks.unsqueeze(1).to(plucker.dtype), plucker], dim=1).transpose(0, 1).unsqueeze(0)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidInputError(message)


def check_clip(
    image: Tensor, cache_renders: Tensor, render_masks: Tensor, plucker: Tensor, multiple: int, temporal: int
) -> None:
    """Shapes of the per-clip inputs; ``H`` and ``W`` must be multiples of ``multiple``."""
    _require(image.ndim == 3 and image.shape[-1] == 3, f"image must be [H,W,3], got {tuple(image.shape)}")
    height, width = image.shape[:2]
    _require(
        height % multiple == 0 and width % multiple == 0,
        f"image size {height}x{width} must be a multiple of {multiple}",
    )
    _require(
        cache_renders.ndim == 4 and tuple(cache_renders.shape[1:]) == (height, width, 3),
        f"cache_renders must be [N,{height},{width},3], got {tuple(cache_renders.shape)}",
    )
    frames = cache_renders.shape[0]
    _require(frames % temporal == 1, f"the clip needs 1 + {temporal}k frames, got {frames}")
    _require(
        tuple(render_masks.shape) == (frames, height, width),
        f"render_masks must be [{frames},{height},{width}], got {tuple(render_masks.shape)}",
    )
    _require(
        tuple(plucker.shape) == (frames, 6, height, width),
        f"plucker must be [{frames},6,{height},{width}], got {tuple(plucker.shape)}",
    )


def check_memory(
    references: Tensor, pointmaps: tuple[Tensor, Tensor], target_indices: Tensor, frames: int
) -> None:
    """One reference and one pointmap pair per target frame, at the references' size; targets inside the clip."""
    count = target_indices.shape[0]
    _require(target_indices.ndim == 1 and count > 0, "target_indices must be a non-empty [F] list")
    _require(
        bool(((target_indices >= 0) & (target_indices < frames)).all()),
        f"target_indices must lie in [0, {frames})",
    )
    _require(
        references.ndim == 4 and references.shape[0] == count,
        f"references must be [{count},H,W,3], got {tuple(references.shape)}",
    )
    _require(
        len(pointmaps) == 2 and all(p.shape == references.shape for p in pointmaps),
        f"pointmaps must be (target, reference), each {tuple(references.shape)}",
    )


def build_conditioning(
    vae: AutoencoderKLWan,
    image: Tensor,
    cache_renders: Tensor,
    render_masks: Tensor,
    plucker: Tensor,
    *,
    image_embeds: Tensor | None = None,
    references: Tensor | None = None,
    pointmaps: tuple[Tensor, Tensor] | None = None,
    target_indices: Sequence[int] | Tensor | None = None,
    multiple: int = 16,
) -> Conditioning:
    """Check and encode one clip's conditions with the VAE (on the VAE's device).

    ``image [H, W, 3]``, ``cache_renders [N, H, W, 3]`` in [0, 1]; ``render_masks [N, H, W]`` (1 = covered);
    ``plucker [N, 6, H, W]``; optional memory: ``references [F, H, W, 3]`` in [0, 1], colourised ``pointmaps``
    (target, reference) ``[F, H, W, 3]`` in [0, 1] (:func:`worldstereo.memory.pointmap.pointmap_pairs`) and the
    pixel ``target_indices [F]`` of the targets.
    """
    temporal = int(vae.config.scale_factor_temporal)
    check_clip(image, cache_renders, render_masks, plucker, multiple, temporal)
    memory_inputs = (references, pointmaps, target_indices)
    _require(
        all(x is None for x in memory_inputs) or all(x is not None for x in memory_inputs),
        "references, pointmaps and target_indices come together",
    )
    if references is not None:
        target_indices = torch.as_tensor(target_indices, dtype=torch.long, device="cpu")
        check_memory(references, pointmaps, target_indices, cache_renders.shape[0])
        _require(references.shape[1:] == image.shape, f"references must be [F,{','.join(map(str, image.shape))}]")
    device = next(vae.parameters()).device

    def load(x: Tensor) -> Tensor:
        return x.to(device, torch.float32)

    image, cache_renders = load(image), load(cache_renders)
    first_clip = torch.cat([image[None], torch.full_like(cache_renders[1:], 0.5)])  # 0.5 ↔ 0 in [-1, 1]
    clips = torch.cat([frames_to_video(first_clip), frames_to_video(cache_renders)])  # one VAE pass for both
    image_latents, render_latents = encode_video(vae, clips).chunk(2)
    image_condition = torch.cat([frame_mask(image_latents, temporal), image_latents], dim=1)
    camera = CameraGuidance(render_latents, camera_condition(load(render_masks), load(plucker)))
    memory = None
    if references is not None:
        latents = encode_images(vae, load(torch.cat([references, *pointmaps])))
        reference_latents, target_pointmaps, reference_pointmaps = latents.chunk(3, dim=2)
        frames = latent_frame_indices(target_indices, temporal).to(device)
        memory = StereoMemory(reference_latents, stitch(target_pointmaps, reference_pointmaps), frames)
    embeds = None if image_embeds is None else load(image_embeds).reshape(1, *image_embeds.shape[-2:])
    return Conditioning(image_condition, embeds, camera, memory)
