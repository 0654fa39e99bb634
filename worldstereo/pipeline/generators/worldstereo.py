"""The released WorldStereo 2.0 model as the pipeline's generator ``worldstereo`` (variant from
``generation.variant``: camera | memory | memory-dmd). One keyframe per requested camera (the release: 21,
see :meth:`WorldStereoGenerator.clip_frames`), returned at the request's size; no depth.

Weights: ``models.worldstereo_release`` (the release's variant folders) overlaid on ``models.wan_i2v``
(Wan2.1-I2V diffusers directory, also the source of the UMT5/CLIP encoders, VAE and scheduler). Text and
image embeddings are computed in this process, once per distinct prompt and start frame, and returned with the
video so the scene state keeps them (a resumed scene passes them back); ``models.prompt_embeds``
(a safetensors file, see ``worldstereo-paper``) overrides them for every request. A configuration problem is
reported by every ``generate`` call, so each scene fails with the reason and the batch goes on.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from worldstereo.config import Settings
from worldstereo.errors import ConfigurationError
from worldstereo.models.encoders import ImageEncoder, TextEncoder
from worldstereo.models.release.config import RELEASE_FRAMES
from worldstereo.models.release.loading import wan_dir
from worldstereo.models.release.model import KeyframeClip, ReleaseModel
from worldstereo.pipeline.backends import GeneratedVideo, GenerationRequest, Resources, VideoGenerator
from worldstereo.pipeline.generators.fitting import model_size, pil_bicubic, resize
from worldstereo.pipeline.generators.worldstereo_paper import PromptEmbeddings

log = logging.getLogger(__name__)


class EmbeddingCache:
    """``encode(input) → Tensor`` memoised by key (least recently used dropped past ``capacity``); entries a
    scene already holds (``known``) are taken from there."""

    def __init__(self, encode: Callable[[object], Tensor], capacity: int = 64) -> None:
        self._encode, self._capacity = encode, capacity
        self._entries: OrderedDict[str, Tensor] = OrderedDict()
        self.encoded = 0  # how many times the encoder actually ran

    def get(self, key: str, value: object, known: Mapping[str, Tensor] | None = None) -> Tensor:
        if known is not None and key in known:
            return known[key]
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        self._entries[key] = self._encode(value)
        self.encoded += 1
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)
        return self._entries[key]


def text_key(text: str) -> str:
    """Scene-state key of a text embedding."""
    return "text_" + hashlib.sha256(text.encode()).hexdigest()[:32]


def image_key(image: Tensor) -> str:
    """Scene-state key of a start frame's image embedding."""
    data = image.detach().float().cpu().contiguous().numpy().tobytes()
    return "image_" + hashlib.sha256(data).hexdigest()[:32]


def derived_ref_index(target_indices: Tensor, frames: int) -> Tensor:
    """Target slot of each reference from the frame it was retrieved for: frame ``i`` → slot ``i - 1``."""
    return (target_indices.long() - 1).clamp(0, max(frames - 2, 0))


def bucket_size(height: int, width: int, scale_map, multiple: int) -> tuple[int, int]:
    """The released bucket with the closest aspect ratio, or the request rounded up to ``multiple``."""
    if not scale_map:
        return model_size(height, width, multiple)
    return min(scale_map, key=lambda bucket: abs(bucket[0] / bucket[1] - height / width))


def keyframe_clip(request: GenerationRequest, size: tuple[int, int], max_references: int, memory: bool
                  ) -> KeyframeClip:
    """The request at the model's size as the release's data code makes it: the image by PIL's bicubic filter on
    8-bit pixels, cache renders (clamped) and references bicubic, holes nearest; cameras resized."""
    frames = len(request.cameras)
    cameras = request.cameras.resized(*size)
    ggm = request.ggm

    def pixels(images: Tensor, mode) -> Tensor:
        return resize(images.float(), size, mode)

    references = ref_w2c = ref_index = None
    refs = request.references
    if memory and refs is not None and len(refs.images):
        index = refs.ref_index if refs.ref_index is not None else derived_ref_index(refs.target_indices, frames)
        keep = torch.arange(len(refs.images))
        if len(keep) > max_references:
            keep = torch.linspace(0, len(keep) - 1, max_references).round().long()
        references = pixels(refs.images[keep], "bicubic")
        ref_w2c = refs.cameras.w2c[keep].float()
        ref_index = index[keep]
    return KeyframeClip(
        image=pil_bicubic(request.image.float(), size),
        renders=pixels(ggm.rgb, "bicubic").clamp(0, 1),
        holes=pixels(ggm.mask[..., None], "nearest")[..., 0],
        w2c=cameras.w2c.float(),
        intrinsics=cameras.K.float(),
        reference_images=references,
        reference_w2c=ref_w2c,
        ref_index=ref_index,
    )


class WorldStereoGenerator(VideoGenerator):
    """The released WorldStereo 2.0 variants. ``model``, ``text_encoder`` and ``image_encoder`` may be injected;
    otherwise ``setup()`` loads them from ``settings.models`` (one load per actor)."""

    name = "worldstereo"
    resources = Resources(gpus=1.0, cpus=4.0, memory_gb=64.0)

    def __init__(self, settings: Settings | None = None, *, model: ReleaseModel | None = None,
                 text_encoder: TextEncoder | None = None, image_encoder: ImageEncoder | None = None) -> None:
        super().__init__(settings)
        self.model = model
        self.text_encoder, self.image_encoder = text_encoder, image_encoder
        self.override: PromptEmbeddings | None = None
        self.error: ConfigurationError | None = None
        self._ready = False
        self.texts = EmbeddingCache(lambda prompt: self.text_encoder.encode([prompt])[0])
        self.images = EmbeddingCache(lambda image: self.image_encoder.encode(image))

    def clip_frames(self, planned: int) -> int:
        """The release generates 21 keyframes per trajectory, whatever the planned length."""
        return RELEASE_FRAMES

    def setup(self) -> None:
        if self._ready:
            return
        try:
            self._load()
        except ConfigurationError as error:
            log.error("worldstereo generator not usable: %s", error)
            self.error = error
        self._ready = True

    def _load(self) -> None:
        settings, paths, generation = self.settings, self.settings.models, self.settings.generation
        device = settings.resolved_device()
        if self.model is None:
            self.model = ReleaseModel.from_pretrained(
                paths.worldstereo_release, paths.wan_i2v, generation.variant, device=device,
                dtype=getattr(torch, generation.dtype), offload=generation.offload, steps=generation.steps,
                guidance=generation.guidance,
            )
        if paths.prompt_embeds is not None:
            self.override = PromptEmbeddings.load(paths.prompt_embeds)
            return
        wan = wan_dir(paths.wan_i2v)  # a hub-cache snapshot resolved, every subfolder checked
        encoders_on = "cpu" if generation.offload else device  # with offload the encoders stay in host memory
        if self.text_encoder is None:
            self.text_encoder = TextEncoder(wan, encoders_on)
        if self.image_encoder is None:
            self.image_encoder = ImageEncoder(wan, encoders_on)

    def embeddings(self, prompt: str | None, image: Tensor, known: Mapping[str, Tensor]
                   ) -> tuple[Tensor, Tensor | None, Tensor, dict[str, Tensor]]:
        """``(prompt, negative or None, image)`` embeddings for one clip, and those not in ``known`` (the
        scene's) by key."""
        guided = self.model.guided
        if self.override is not None:
            override = self.override
            if guided and override.negative is None:
                raise ConfigurationError("classifier-free guidance needs 'negative_prompt_embeds' in "
                                         "WORLDSTEREO_MODELS__PROMPT_EMBEDS")
            if override.image is None:
                raise ConfigurationError("WORLDSTEREO_MODELS__PROMPT_EMBEDS lacks 'image_embeds' (CLIP tokens)")
            return override.prompt, override.negative if guided else None, override.image, {}
        text = prompt if prompt is not None else self.settings.generation.default_prompt
        negative_text = self.model.config.negative_prompt
        used = {text_key(text): self.texts.get(text_key(text), text, known),
                image_key(image): self.images.get(image_key(image), image, known)}
        if guided:
            used[text_key(negative_text)] = self.texts.get(text_key(negative_text), negative_text, known)
        fresh = {key: value for key, value in used.items() if key not in known}
        negative = used[text_key(negative_text)] if guided else None
        return used[text_key(text)], negative, used[image_key(image)], fresh

    def generate(self, request: GenerationRequest) -> GeneratedVideo:
        self.setup()
        if self.error is not None:
            raise self.error
        model = self.model
        height, width = request.image.shape[:2]
        size = bucket_size(height, width, model.config.scale_map, model.size_multiple)
        clip = keyframe_clip(request, size, self.settings.memory.max_references, model.config.memory)
        prompt, negative, image, fresh = self.embeddings(request.prompt, clip.image, request.embeddings)
        frames = model.generate(clip, prompt, image, negative, seed=request.seed)
        out = resize(frames, (height, width), "bilinear").clamp(0, 1).to(request.image.device)
        return GeneratedVideo(frames=out, depth=None, embeddings=fresh)
