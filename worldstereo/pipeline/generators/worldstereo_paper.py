"""The paper's WorldStereo architecture (separate SSM branch, pointmap latents) as the generator
``worldstereo-paper``: GGM renders, Plücker rays and SSM references in, frames out (paper Sec. 3). No public
weights exist for this architecture (the released checkpoints are served by ``worldstereo``); it runs with
weights trained for it. The model produces no depth, so it pairs with an image-based reconstructor.

Fitting a request to the model. Wan needs ``H, W`` multiples of 16 (VAE stride 8 x patch 2) and ``N = 1 + 4k``
frames (causal VAE, temporal stride 4). A request of another size is resampled up to the next multiples —
photographs (given image, references) bilinearly, cache renders, hole masks and pointmaps at the nearest pixel
centre so holes stay holes and colourised coordinates stay unblended, Plücker rays recomputed exactly for the
resized cameras — and the generated frames are resampled back. A clip of another length is padded at its end
by holding the last camera (its render, mask and rays repeated); the extra frames are dropped.

Text and image-encoder embeddings are precomputed (no text encoder runs here): ``models.prompt_embeds`` names a
safetensors file with ``prompt_embeds`` (UMT5, ``[512, 4096]``), optionally ``negative_prompt_embeds`` (same
shape; needed by guided ``flow`` sampling) and ``image_embeds`` (CLIP ViT-H penultimate tokens of the
conditioning image, ``[257, 1280]``; Wan2.1-I2V requires them). A leading batch dimension of 1 is accepted.
One file serves every request: all clips share its prompt and its CLIP tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from worldstereo.config import Settings
from worldstereo.errors import ConfigurationError
from worldstereo.geometry.plucker import plucker_rays
from worldstereo.models.loading import require_component
from worldstereo.models.paper.model import TRANSFORMER, VAE, WorldStereoModel
from worldstereo.models.wan import WAN_TEXT_TOKENS
from worldstereo.pipeline.backends import GeneratedVideo, GenerationRequest, Resources, VideoGenerator
from worldstereo.pipeline.generators.fitting import model_size, resize

PROMPT, NEGATIVE, IMAGE = "prompt_embeds", "negative_prompt_embeds", "image_embeds"
PROMPT_SETTING = "WORLDSTEREO_MODELS__PROMPT_EMBEDS"
DMD_SETTING = "WORLDSTEREO_MODELS__WAN_I2V_DMD"
HOW_TO_EMBED = (
    f"Set {PROMPT_SETTING} to a safetensors file holding '{PROMPT}' [512, 4096] (Wan2.1's UMT5-XXL encoding of "
    f"the prompt, padded to 512 tokens), '{NEGATIVE}' (the same for the negative prompt; needed by guided flow "
    f"sampling) and '{IMAGE}' [257, 1280] (the penultimate hidden states of Wan2.1-I2V's CLIP ViT-H/14 image "
    "encoder on the conditioning image). No text encoder is installed here: compute them on a machine with "
    "`transformers`, e.g. with diffusers' WanImageToVideoPipeline.encode_prompt and .encode_image, and write "
    "them with safetensors.torch.save_file."
)


@dataclass(frozen=True)
class PromptEmbeddings:
    """Precomputed encoder outputs: ``prompt`` and ``negative`` ``[512, text_dim]``, ``image`` ``[K, image_dim]``."""

    prompt: Tensor
    negative: Tensor | None = None
    image: Tensor | None = None

    @classmethod
    def load(cls, path: Path | None) -> PromptEmbeddings:
        """The embeddings file named by ``models.prompt_embeds``."""
        if path is None:
            raise ConfigurationError(f"no prompt embeddings configured. {HOW_TO_EMBED}")
        if not Path(path).is_file():
            raise ConfigurationError(f"prompt embeddings file {path} does not exist. {HOW_TO_EMBED}")
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise ConfigurationError(f"cannot read prompt embeddings {path}: {exc}. {HOW_TO_EMBED}") from exc
        unknown = sorted(set(tensors) - {PROMPT, NEGATIVE, IMAGE})
        if PROMPT not in tensors or unknown:
            found = ", ".join(sorted(tensors)) or "nothing"
            raise ConfigurationError(f"prompt embeddings {path} hold {found}. {HOW_TO_EMBED}")

        def unbatched(name: str) -> Tensor | None:
            tensor = tensors.get(name)
            return tensor[0] if tensor is not None and tensor.ndim == 3 and tensor.shape[0] == 1 else tensor

        return cls(unbatched(PROMPT), unbatched(NEGATIVE), unbatched(IMAGE))

    def check(self, model: WorldStereoModel, *, guided: bool) -> None:
        """Shapes against the model's backbone; ``guided`` sampling needs the negative prompt."""
        config = model.transformer.backbone.config
        text = (WAN_TEXT_TOKENS, config.text_dim)
        for name, tensor in ((PROMPT, self.prompt), (NEGATIVE, self.negative)):
            if tensor is not None and tuple(tensor.shape) != text:
                raise ConfigurationError(f"{name} must be {list(text)} for this backbone, got {list(tensor.shape)}")
        if guided and self.negative is None:
            raise ConfigurationError(f"guided flow sampling needs '{NEGATIVE}' in the prompt embeddings file")
        if config.image_dim is None and self.image is not None:
            raise ConfigurationError(f"this backbone takes no {IMAGE}")
        if config.image_dim is not None and (
            self.image is None or self.image.ndim != 2 or self.image.shape[1] != config.image_dim
        ):
            got = "none" if self.image is None else list(self.image.shape)
            raise ConfigurationError(f"the I2V backbone needs {IMAGE} [K, {config.image_dim}], got {got}")


def load_model(settings: Settings) -> WorldStereoModel:
    """Wan2.1-I2V with the WorldStereo branches from local weights; the DMD-distilled Wan for ``dmd`` sampling when
    ``models.wan_i2v_dmd`` is set (branches then from ``models.worldstereo_branches``, else ``models.wan_i2v``)."""
    generation, paths = settings.generation, settings.models
    dtype = getattr(torch, generation.dtype)
    if generation.sampler != "dmd" or paths.wan_i2v_dmd is None:
        return WorldStereoModel.from_settings(settings, dtype=dtype, offload=generation.offload)
    for part, what in ((TRANSFORMER, "DMD-distilled Wan2.1-I2V transformer"), (VAE, "Wan2.1 VAE")):
        require_component(paths.wan_i2v_dmd / part, what, DMD_SETTING)
    branches = paths.worldstereo_branches or paths.wan_i2v
    if branches is None:
        raise ConfigurationError(
            "no WorldStereo branch weights configured: set WORLDSTEREO_MODELS__WORLDSTEREO_BRANCHES to the local "
            "directory with camera/ and ssm/ (or WORLDSTEREO_MODELS__WAN_I2V if they live there)"
        )
    return WorldStereoModel.from_pretrained(
        paths.wan_i2v_dmd, branches, device=settings.resolved_device(), dtype=dtype, offload=generation.offload
    )


# --- fitting a request to the model -----------------------------------------------------------------------
def model_frames(frames: int, temporal: int) -> int:
    """The shortest clip of ``1 + temporal k`` frames holding ``frames``."""
    return 1 + temporal * math.ceil((frames - 1) / temporal)


def hold_last(frames: Tensor, count: int) -> Tensor:
    """``frames [N,...]`` extended to ``count`` by repeating the last one."""
    return torch.cat([frames, frames[-1:].expand(count - len(frames), *frames.shape[1:])])


@dataclass(frozen=True)
class ModelInputs:
    """A request in the model's terms (size multiple of 16, ``1 + 4k`` frames): the clip arguments of
    :meth:`WorldStereoModel.generate`."""

    image: Tensor  # [H,W,3]
    cache_renders: Tensor  # [N,H,W,3]
    render_masks: Tensor  # [N,H,W] 1 where the cache covers the pixel
    plucker: Tensor  # [N,6,H,W]
    references: Tensor  # [F,H,W,3]
    pointmaps: tuple[Tensor, Tensor]  # target, reference [F,H,W,3]
    target_indices: Tensor  # [F]

    def arguments(self) -> dict[str, Any]:
        return dict(vars(self))


def model_inputs(
    request: GenerationRequest, size: tuple[int, int], frames: int, device: torch.device | str = "cpu"
) -> ModelInputs:
    """The request resampled to ``size`` and padded to ``frames`` frames (module docstring), on ``device``."""
    ggm, refs = request.ggm, request.references

    def pixels(images: Tensor, mode: Literal["bilinear", "nearest-exact"]) -> Tensor:
        return resize(images.to(device, torch.float32), size, mode)

    covered = pixels((~ggm.mask)[..., None], "nearest-exact")[..., 0]
    plucker = plucker_rays(request.cameras.resized(*size).to(device))
    return ModelInputs(
        image=pixels(request.image[None], "bilinear")[0],
        cache_renders=hold_last(pixels(ggm.rgb, "nearest-exact"), frames),
        render_masks=hold_last(covered, frames),
        plucker=hold_last(plucker.to(device, torch.float32), frames),
        references=pixels(refs.images, "bilinear"),
        pointmaps=(pixels(refs.target_pointmaps, "nearest-exact"), pixels(refs.reference_pointmaps, "nearest-exact")),
        target_indices=refs.target_indices.to(device),
    )


def request_frames(frames: Tensor, request: GenerationRequest) -> Tensor:
    """Generated ``[N',H',W',3]`` → the request's first ``N`` frames at its size, in [0, 1], on its device."""
    count, height, width = len(request.cameras), *request.image.shape[:2]
    return resize(frames[:count], (height, width), "bilinear").clamp(0, 1).to(request.image.device)


class WorldStereoPaperGenerator(VideoGenerator):
    """Wan2.1-I2V with the camera ControlNet (GGM) and the SSM branch, sampled as ``settings.generation`` says.

    ``model`` and ``prompt_embeds`` inject a loaded model and embeddings; otherwise ``setup()`` loads them from
    ``settings.models``. Returns frames only (``depth=None``).
    """

    name = "worldstereo-paper"
    resources = Resources(gpus=1.0, cpus=4.0, memory_gb=64.0)
    pointmaps = True

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        model: WorldStereoModel | None = None,
        prompt_embeds: PromptEmbeddings | None = None,
    ) -> None:
        super().__init__(settings)
        self.model = model
        self.prompt_embeds = prompt_embeds

    @property
    def guided(self) -> bool:
        generation = self.settings.generation
        return generation.sampler == "flow" and generation.guidance != 1.0

    def setup(self) -> None:
        if self.prompt_embeds is None:
            self.prompt_embeds = PromptEmbeddings.load(self.settings.models.prompt_embeds)
        if self.model is None:
            self.model = load_model(self.settings)
        self.prompt_embeds.check(self.model, guided=self.guided)

    def generate(self, request: GenerationRequest) -> GeneratedVideo:
        self.setup()
        model, embeds, generation = self.model, self.prompt_embeds, self.settings.generation
        height, width = request.image.shape[:2]
        size = model_size(height, width, model.size_multiple)
        frames = model_frames(len(request.cameras), int(model.vae.config.scale_factor_temporal))
        inputs = model_inputs(request, size, frames, model.device)
        generated = model.generate(
            **inputs.arguments(),
            prompt_embeds=embeds.prompt,
            negative_prompt_embeds=embeds.negative if self.guided else None,
            image_embeds=embeds.image,
            sampler=generation.sampler,
            steps=generation.steps,
            guidance=generation.guidance,
            shift=generation.shift,
            seed=request.seed,
        )
        return GeneratedVideo(frames=request_frames(generated, request), depth=None)
