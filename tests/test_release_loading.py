"""Loading the released variants from local directories (strict), and the ``worldstereo`` generator on them."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from release_fixture import write_tiny_release, write_worldmirror_checkout
from safetensors.torch import load_file, save_file
from scene_requests import scene_request

from worldstereo.config import GeneratorSettings, ModelPaths, Settings, StorageSettings, TrajectorySettings
from worldstereo.errors import ConfigurationError
from worldstereo.models.release.loading import read_release_config, wan_dir
from worldstereo.models.release.model import ReleaseModel
from worldstereo.models.samplers import DMDSampler, UniPCSampler
from worldstereo.pipeline.generators.worldstereo import (
    WorldStereoGenerator,
    bucket_size,
    derived_ref_index,
    keyframe_clip,
    text_key,
)
from worldstereo.pipeline.local import process_scene, read_local_input
from worldstereo.pipeline.registry import make_backend
from worldstereo.pipeline.state import StateStore
from worldstereo.storage.factory import open_store
from worldstereo.storage.keys import output_key
from worldstereo.synthetic.samples import write_samples


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple[Path, Path]:
    return write_tiny_release(tmp_path_factory.mktemp("release"))


def settings_for(wan: Path | None, release: Path | None, variant: str = "memory-dmd", **models) -> Settings:
    return Settings(generator="worldstereo", device="cpu",
                    models=ModelPaths(wan_i2v=wan, worldstereo_release=release, **models),
                    generation=GeneratorSettings(dtype="float32", variant=variant, steps=2))


@pytest.mark.parametrize("variant", ["camera", "memory", "memory-dmd"])
def test_variants_load_strictly_with_their_samplers(weights, variant):
    wan, release = weights
    model = ReleaseModel.from_pretrained(release, wan, variant, dtype=torch.float32, steps=2)
    overlay = load_file(str(release / f"worldstereo-{variant}" / "model.safetensors"))
    state = model.transformer.state_dict()
    assert all(torch.equal(state[key], value) for key, value in overlay.items())  # the overlay wins
    base = load_file(str(wan / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert torch.equal(state["blocks.1.attn1.to_q.weight"], base["blocks.1.attn1.to_q.weight"])
    assert model.config.memory == (variant != "camera")
    if variant == "memory-dmd":
        assert isinstance(model.sampler, DMDSampler) and not model.guided
        assert model.sampler.timesteps().tolist() == pytest.approx([1000.0, 625.0])
    else:
        assert isinstance(model.sampler, UniPCSampler) and model.sampler.guidance == 5.0 and model.guided


def test_bad_configuration_names_the_file_and_the_setting(weights, tmp_path):
    wan, release = weights

    def error(release_dir, wan_path, variant="memory") -> str:
        with pytest.raises(ConfigurationError) as raised:
            ReleaseModel.from_pretrained(release_dir, wan_path, variant, dtype=torch.float32)
        return str(raised.value)

    assert "WORLDSTEREO_MODELS__WORLDSTEREO_RELEASE" in error(None, wan)
    assert "WORLDSTEREO_MODELS__WAN_I2V" in error(release, None)
    message = error(tmp_path / "nowhere", wan)
    assert "worldstereo-memory" in message and "WORLDSTEREO_MODELS__WORLDSTEREO_RELEASE" in message
    broken = tmp_path / "broken"
    shutil.copytree(release, broken)
    folder = broken / "worldstereo-memory"
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "base_model"}))
    assert "base_model" in error(broken, wan) and "config.json" in error(broken, wan)
    (folder / "config.json").write_text(json.dumps(config | {"base_model": "Wan-AI/Wan2.2-T2V-A14B"}))
    assert "not a Wan2.1-I2V" in error(broken, wan)
    (folder / "config.json").write_text(json.dumps(config))
    weights_file = folder / "model.safetensors"
    overlay = load_file(str(weights_file))
    save_file(overlay | {"controlnet.extra.weight": torch.zeros(2)}, str(weights_file))
    message = error(broken, wan)
    assert "unexpected weight 'controlnet.extra.weight'" in message and "model.safetensors" in message
    wide = dict(overlay)
    wide["controlnet.proj_out.0.weight"] = torch.zeros(3, 3)
    save_file(wide, str(weights_file))
    assert "controlnet.proj_out.0.weight has shape (3, 3)" in error(broken, wan)
    save_file({k: v for k, v in overlay.items() if not k.startswith("controlnet.proj_out.1")}, str(weights_file))
    assert "weights unset" in error(broken, wan) and "controlnet.proj_out.1" in error(broken, wan)
    partial = tmp_path / "wan_partial"
    shutil.copytree(wan, partial)
    shutil.rmtree(partial / "image_processor")
    assert "image_processor" in error(release, partial) and "WORLDSTEREO_MODELS__WAN_I2V" in error(release, partial)


def test_hub_cache_snapshot_layout(weights, tmp_path):
    wan, release = weights
    snapshot = tmp_path / "models--hanshanxue--WorldStereo" / "snapshots" / "abc123"
    shutil.copytree(release, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    config, folder = read_release_config(tmp_path, "camera")
    assert folder == snapshot / "worldstereo-camera" and config.variant == "camera"
    assert wan_dir(wan) == wan


@pytest.mark.parametrize("variant", ["camera", "memory", "memory-dmd"])
def test_generator_serves_a_pipeline_request(weights, tmp_path, variant):
    wan, release = weights
    request = scene_request(tmp_path / "store")
    generator = make_backend("generator", "worldstereo", settings_for(wan, release, variant))
    assert isinstance(generator, WorldStereoGenerator) and generator.clip_frames(81) == 21
    generator.setup()
    video = generator.generate(replace(request, prompt="a photo of the room"))
    assert video.frames.shape == (len(request.cameras), *request.image.shape) and video.depth is None
    assert torch.isfinite(video.frames).all() and video.frames.min() >= 0 and video.frames.max() <= 1
    again = generator.generate(replace(request, prompt="a photo of the room"))
    assert torch.equal(video.frames, again.frames)  # same seed, same clip
    # one text encode per distinct prompt (+ the negative prompt when guided), one CLIP encode per start frame
    assert generator.texts.encoded == (1 if variant == "memory-dmd" else 2) and generator.images.encoded == 1
    assert len(video.embeddings) == (2 if variant == "memory-dmd" else 3) and again.embeddings.keys() == \
        video.embeddings.keys()
    # a resumed scene hands its kept embeddings back: a fresh generator encodes nothing
    fresh = make_backend("generator", "worldstereo", settings_for(wan, release, variant))
    resumed = fresh.generate(replace(request, prompt="a photo of the room", embeddings=video.embeddings))
    assert fresh.texts.encoded == 0 and fresh.images.encoded == 0 and resumed.embeddings == {}
    assert torch.equal(resumed.frames, video.frames)
    other = fresh.generate(replace(request, prompt="a red car", embeddings=video.embeddings))
    assert fresh.texts.encoded == 1 and list(other.embeddings) == [text_key("a red car")]
    assert not torch.equal(other.embeddings[text_key("a red car")], video.embeddings[text_key("a photo of the room")])


def test_configuration_errors_surface_at_generate(tmp_path):
    generator = WorldStereoGenerator(settings_for(None, None))
    generator.setup()  # does not raise: every scene fails with the reason instead
    with pytest.raises(ConfigurationError, match="WORLDSTEREO_MODELS__WORLDSTEREO_RELEASE"):
        generator.generate(scene_request(tmp_path / "store"))


def test_precomputed_embeddings_override_the_encoders(weights, tmp_path):
    wan, release = weights
    embeds = tmp_path / "embeds.safetensors"
    save_file({"prompt_embeds": torch.randn(1, 512, 32), "negative_prompt_embeds": torch.randn(1, 512, 32),
               "image_embeds": torch.randn(1, 17, 16)}, str(embeds))
    generator = WorldStereoGenerator(settings_for(wan, release, "camera", prompt_embeds=embeds))
    request = scene_request(tmp_path / "store")
    video = generator.generate(request)
    assert generator.text_encoder is None and generator.image_encoder is None  # never loaded
    assert video.frames.shape == (len(request.cameras), *request.image.shape)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["camera", "memory", "memory-dmd"])
def test_scene_runs_to_its_end_with_each_variant(weights, tmp_path, variant):
    """A synthetic sample through every stage (the real loaders; WorldMirror's layout for reconstruction)."""
    wan, release = weights
    checkout = write_worldmirror_checkout(tmp_path / "worldmirror")
    sample = write_samples(tmp_path / "samples")[0]
    (sample.with_name(sample.stem + ".prompt.json")).write_text(json.dumps({"long caption": "a photo of the room"}))
    settings = settings_for(wan, release, variant, worldmirror=checkout).model_copy(update={
        "storage": StorageSettings(backend="local", root=tmp_path / "store"), "resolution_scale": 0.1,
        "reconstructor": "worldmirror",
        "trajectory": TrajectorySettings(planner="presets", num_frames=21, order=("orbit",)),
    })
    store = open_store(settings.storage)
    scene = read_local_input(sample, settings)
    assert scene.prompt == "a photo of the room"
    try:
        summary = process_scene(store, sample.stem, scene, settings)
    finally:
        for name in [m for m in sys.modules if m == "src" or m.startswith("src.")]:
            del sys.modules[name]
        sys.path[:] = [p for p in sys.path if p != str(checkout)]
    assert summary is not None
    assert store.exists(settings.storage.work_bucket, output_key(sample.stem, "orbit", "video.mp4"))
    assert store.exists(settings.storage.work_bucket, output_key(sample.stem, "exports", "fused.ply"))
    kept = StateStore(store, settings.storage.work_bucket, sample.stem).load("orbit").embeddings
    assert text_key("a photo of the room") in kept and any(key.startswith("image_") for key in kept)


def test_bucket_and_reference_slots():
    buckets = ((480, 832), (608, 608), (832, 480))
    assert bucket_size(300, 520, buckets, 16) == (480, 832) and bucket_size(500, 480, buckets, 16) == (608, 608)
    assert bucket_size(72, 112, None, 16) == (80, 112)  # no scale_map: round up to the model grid
    # a reference retrieved for trajectory frame i sits beside latent frame i (slot i - 1)
    assert derived_ref_index(torch.tensor([1, 5, 20]), 21).tolist() == [0, 4, 19]
    assert derived_ref_index(torch.tensor([0, 9]), 5).tolist() == [0, 3]


def test_clip_is_resized_as_the_release_data_code(tmp_path):
    request = scene_request(tmp_path)  # 120x192 start frame
    size = (96, 160)
    clip = keyframe_clip(request, size, max_references=8, memory=True)
    pixels = (request.image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    pil = Image.fromarray(pixels).resize((160, 96), Image.Resampling.BICUBIC)  # PIL's bicubic on 8-bit RGB
    assert torch.equal(clip.image, torch.from_numpy(np.asarray(pil).copy()).float() / 255)
    renders = F.interpolate(request.ggm.rgb.permute(0, 3, 1, 2).float(), size=size, mode="bicubic")
    assert torch.equal(clip.renders, renders.permute(0, 2, 3, 1).clamp(0, 1))
    holes = F.interpolate(request.ggm.mask[:, None].float(), size=size, mode="nearest")[:, 0]
    assert torch.equal(clip.holes, holes) and set(clip.holes.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(clip.intrinsics, request.cameras.resized(*size).K.float())
