"""The WorldStereo generator backend: requests built by the pipeline in, frames out, through a tiny random model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from scene_requests import scene_request

from worldstereo.config import GeneratorSettings, ModelPaths, Settings
from worldstereo.errors import ConfigurationError
from worldstereo.geometry.plucker import plucker_rays
from worldstereo.models import WorldStereoModel, tiny_config
from worldstereo.pipeline.generators.worldstereo_paper import (
    PromptEmbeddings,
    WorldStereoPaperGenerator,
    model_frames,
    model_size,
)
from worldstereo.pipeline.registry import make_backend

TEXT_DIM, IMAGE_DIM = 16, 8  # tiny_config()'s UMT5 and CLIP widths


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, which only add synchronisation on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(seed: int = 0) -> WorldStereoModel:
    torch.manual_seed(seed)
    return WorldStereoModel.from_config(tiny_config())


def embeddings(seed: int = 0) -> PromptEmbeddings:
    generator = torch.Generator().manual_seed(seed)
    return PromptEmbeddings(
        prompt=torch.randn(512, TEXT_DIM, generator=generator),
        negative=torch.randn(512, TEXT_DIM, generator=generator),
        image=torch.randn(4, IMAGE_DIM, generator=generator),
    )


def write_embeddings(path: Path, embeds: PromptEmbeddings, *, batched: bool = False) -> Path:
    tensors = {"prompt_embeds": embeds.prompt, "negative_prompt_embeds": embeds.negative, "image_embeds": embeds.image}
    save_file({k: v[None] if batched else v for k, v in tensors.items() if v is not None}, str(path))
    return path


def spy(model: WorldStereoModel) -> list[dict]:
    """Record every ``generate`` call's arguments and result."""
    calls: list[dict] = []
    original = model.generate

    def generate(**kwargs):
        frames = original(**kwargs)
        calls.append(kwargs | {"result": frames})
        return frames

    model.generate = generate
    return calls


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """A tiny model in diffusers' layout, a second one standing in for the DMD-distilled Wan, and embeddings."""
    root = tmp_path_factory.mktemp("weights")
    tiny_model(0).save_pretrained(root / "wan")
    tiny_model(1).save_pretrained(root / "dmd")
    return {"wan": root / "wan", "dmd": root / "dmd", "embeds": write_embeddings(root / "embeds.safetensors",
                                                                                   embeddings(), batched=True)}


# --- fitting requests to the model ------------------------------------------------------------------------
def test_clip_length_and_size_round_up_to_what_wan_takes():
    assert [model_frames(n, 4) for n in (2, 5, 6, 9, 21, 80, 81)] == [5, 5, 9, 9, 21, 81, 81]
    assert model_size(72, 112, 16) == (80, 112)
    assert model_size(48, 80, 16) == (48, 80)
    for bucket in ((480, 768), (512, 720), (576, 640), (608, 608)):  # the 480p buckets already fit
        assert model_size(*bucket, 16) == bucket


def test_request_on_the_model_grid_reaches_the_model_unchanged(tmp_path):
    request = scene_request(tmp_path, frames=9, scale=0.1)
    height, width = request.image.shape[:2]
    assert (height, width) == (48, 80) and len(request.references.target_indices) == 2
    model = tiny_model()
    calls = spy(model)
    generator = WorldStereoPaperGenerator(Settings(device="cpu"), model=model, prompt_embeds=embeddings())
    video = generator.generate(request)

    sent = calls[0]
    refs = request.references
    assert torch.equal(sent["image"], request.image)
    assert torch.equal(sent["cache_renders"], request.ggm.rgb)
    assert torch.equal(sent["render_masks"], (~request.ggm.mask).float())  # 1 = covered by the cache
    assert sent["render_masks"][0].all() and 0 < sent["render_masks"][1:].mean() < 1
    assert torch.equal(sent["plucker"], plucker_rays(request.cameras))
    assert torch.equal(sent["references"], refs.images)
    assert torch.equal(sent["pointmaps"][0], refs.target_pointmaps.float())
    assert torch.equal(sent["pointmaps"][1], refs.reference_pointmaps.float())
    assert torch.equal(sent["target_indices"], refs.target_indices)
    assert sent["sampler"] == "dmd" and sent["negative_prompt_embeds"] is None and sent["seed"] == request.seed
    assert torch.equal(sent["image_embeds"], generator.prompt_embeds.image)

    assert video.depth is None
    assert video.frames.shape == (9, height, width, 3) and video.frames.dtype == torch.float32
    assert torch.equal(video.frames, sent["result"])
    assert video.frames.min() >= 0 and video.frames.max() <= 1 and video.frames.std() > 0

    assert torch.equal(generator.generate(request).frames, video.frames)  # seeded
    assert not torch.equal(generator.generate(replace(request, seed=request.seed + 1)).frames, video.frames)


def test_request_off_the_grid_is_padded_resampled_and_mapped_back(tmp_path):
    request = scene_request(tmp_path, frames=6, scale=0.15)
    assert request.image.shape[:2] == (72, 112) and len(request.cameras) == 6
    model = tiny_model()
    calls = spy(model)
    settings = Settings(device="cpu", generation=GeneratorSettings(sampler="flow", steps=2, guidance=3.0))
    video = WorldStereoPaperGenerator(settings, model=model, prompt_embeds=embeddings()).generate(request)
    sent = calls[0]
    assert sent["sampler"] == "flow" and sent["steps"] == 2 and sent["negative_prompt_embeds"] is not None

    # 6 frames -> 9 (1 + 4k) by holding the last camera; 72 x 112 -> 80 x 112 (multiples of 16)
    assert sent["image"].shape == (80, 112, 3)
    assert sent["cache_renders"].shape == (9, 80, 112, 3) and sent["plucker"].shape == (9, 6, 80, 112)
    for name in ("cache_renders", "render_masks", "plucker"):
        assert all(torch.equal(sent[name][k], sent[name][5]) for k in (6, 7, 8))

    # renders, masks and pointmaps take the nearest source pixel centre: rows 0..71 -> floor((i + 0.5) * 72 / 80)
    rows = ((torch.arange(80) + 0.5) * 72 / 80).floor().long()
    assert torch.equal(sent["render_masks"][:6], (~request.ggm.mask)[:, rows].float())
    assert torch.equal(sent["cache_renders"][:6], request.ggm.rgb[:, rows])
    assert torch.equal(sent["pointmaps"][0], request.references.target_pointmaps[:, rows].float())
    assert torch.equal(sent["pointmaps"][1], request.references.reference_pointmaps[:, rows].float())
    assert sent["references"].shape == (len(request.references.images), 80, 112, 3)

    # the rays are those of the resized cameras: sampled back at the request's pixel centres they match its rays
    back = F.interpolate(sent["plucker"][:6], size=(72, 112), mode="bilinear", align_corners=False)
    assert (back - plucker_rays(request.cameras))[:, :, 4:-4].abs().max() < 2e-3
    assert torch.equal(sent["plucker"][:6], plucker_rays(request.cameras.resized(80, 112)))

    generated = sent["result"]
    assert generated.shape == (9, 80, 112, 3)
    assert video.frames.shape == (6, 72, 112, 3) and video.depth is None
    expected = F.interpolate(generated[:6].permute(0, 3, 1, 2), size=(72, 112), mode="bilinear", antialias=True,
                             align_corners=False).permute(0, 2, 3, 1).clamp(0, 1)
    assert torch.equal(video.frames, expected)


# --- loading through the registry --------------------------------------------------------------------------
def settings_with(models: ModelPaths, **generation) -> Settings:
    return Settings(generator="worldstereo-paper", device="cpu", models=models,
                    generation=GeneratorSettings(dtype="float32", **generation))


def setup_error(settings: Settings) -> str:
    backend = make_backend("generator", "worldstereo-paper", settings)
    with pytest.raises(ConfigurationError) as error:
        backend.setup()
    return str(error.value)


def test_registry_backend_wants_a_gpu_and_says_what_to_configure(tmp_path, saved):
    backend = make_backend("generator", "worldstereo-paper", Settings(device="cpu"))
    assert isinstance(backend, WorldStereoPaperGenerator) and backend.resources.gpus >= 1

    message = setup_error(settings_with(ModelPaths()))
    assert "WORLDSTEREO_MODELS__PROMPT_EMBEDS" in message and "UMT5" in message and "encode_prompt" in message
    assert "does not exist" in setup_error(settings_with(ModelPaths(prompt_embeds=tmp_path / "absent")))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    assert "cannot read" in setup_error(settings_with(ModelPaths(prompt_embeds=garbage)))

    embeds = saved["embeds"]
    assert "WORLDSTEREO_MODELS__WAN_I2V" in setup_error(settings_with(ModelPaths(prompt_embeds=embeds)))
    empty = tmp_path / "empty"
    empty.mkdir()
    message = setup_error(settings_with(ModelPaths(prompt_embeds=embeds, wan_i2v=empty)))
    assert "transformer" in message and "WORLDSTEREO_MODELS__WAN_I2V" in message
    message = setup_error(settings_with(ModelPaths(prompt_embeds=embeds, wan_i2v=saved["wan"],
                                                             wan_i2v_dmd=empty)))
    assert "DMD-distilled" in message and "WORLDSTEREO_MODELS__WAN_I2V_DMD" in message
    message = setup_error(settings_with(ModelPaths(prompt_embeds=embeds, wan_i2v_dmd=saved["dmd"])))
    assert "WORLDSTEREO_MODELS__WORLDSTEREO_BRANCHES" in message

    def with_embeddings(name: str, embeds: PromptEmbeddings, **generation) -> str:
        path = write_embeddings(tmp_path / name, embeds)
        return setup_error(settings_with(ModelPaths(prompt_embeds=path, wan_i2v=saved["wan"]), **generation))

    full = embeddings()
    assert "prompt_embeds must be [512, 16]" in with_embeddings("wide.st", replace(full, prompt=torch.zeros(512, 32)))
    assert "negative_prompt_embeds" in with_embeddings("guided.st", replace(full, negative=None), sampler="flow")
    assert "image_embeds [K, 8]" in with_embeddings("no_image.st", replace(full, image=None))


def test_setup_loads_local_weights_and_generates_like_the_model_itself(tmp_path, saved):
    request = scene_request(tmp_path / "store", frames=5, scale=0.1)
    settings = settings_with(ModelPaths(wan_i2v=saved["wan"], prompt_embeds=saved["embeds"]))
    backend = make_backend("generator", "worldstereo-paper", settings)
    backend.setup()
    video = backend.generate(request)
    assert video.frames.shape == (5, *request.image.shape) and video.depth is None
    reference = WorldStereoPaperGenerator(settings, model=tiny_model(0), prompt_embeds=embeddings())
    assert torch.equal(video.frames, reference.generate(request).frames)  # weights and embeddings loaded exactly


def test_dmd_sampling_loads_the_distilled_transformer_with_the_branches(tmp_path, saved):
    paths = ModelPaths(wan_i2v=saved["wan"], wan_i2v_dmd=saved["dmd"], prompt_embeds=saved["embeds"])
    backend = make_backend("generator", "worldstereo-paper", settings_with(paths, sampler="dmd"))
    backend.setup()
    base, distilled = tiny_model(0).transformer, tiny_model(1).transformer
    loaded = backend.model.transformer
    assert torch.equal(loaded.backbone.blocks[0].attn1.to_q.weight, distilled.backbone.blocks[0].attn1.to_q.weight)
    assert not torch.equal(loaded.backbone.blocks[0].attn1.to_q.weight, base.backbone.blocks[0].attn1.to_q.weight)
    for branch in ("camera", "ssm"):
        ours, theirs = getattr(loaded, branch).state_dict(), getattr(base, branch).state_dict()
        other = getattr(distilled, branch).state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
        assert not all(torch.equal(ours[k], other[k]) for k in other)
    flow = make_backend("generator", "worldstereo-paper", settings_with(paths, sampler="flow"))
    flow.setup()  # flow sampling keeps the base Wan transformer
    assert torch.equal(flow.model.transformer.backbone.blocks[0].attn1.to_q.weight,
                       base.backbone.blocks[0].attn1.to_q.weight)
