"""Prompt sidecars and the per-scene UMT5 / CLIP encoders of the released model."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from release_fixture import write_wan

from worldstereo.config import Settings
from worldstereo.errors import InvalidInputError
from worldstereo.inputs import load_input
from worldstereo.models.encoders import ImageEncoder, TextEncoder
from worldstereo.pipeline.generators.worldstereo import EmbeddingCache
from worldstereo.pipeline.local import read_local_input
from worldstereo.prompts import parse_prompt, prompt_keys


@pytest.fixture(scope="module")
def wan(tmp_path_factory) -> Path:
    return write_wan(tmp_path_factory.mktemp("wan"))


def png(height: int = 40, width: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_prompt_sidecars_follow_the_release_keys():
    captions = {"short caption": "a room", "medium caption": "a red room", "long caption": "a red room, wide"}
    assert parse_prompt(json.dumps(captions).encode(), "x.prompt.json") == "a red room, wide"
    assert parse_prompt(json.dumps({"short caption": "a room", "long caption": ""}).encode(), "x.prompt.json") == "a room"
    assert parse_prompt(json.dumps({"prompt": "kitchen"}).encode(), "x.prompt.json") == "kitchen"
    assert parse_prompt(b"  a garden at dusk\n", "x.txt") == "a garden at dusk"
    assert prompt_keys("a/b/scene.png") == ("a/b/scene.prompt.json", "a/b/scene.txt")
    for data, name, reason in [(b"{", "x.prompt.json", "not valid JSON"), (b'{"title": "x"}', "x.prompt.json",
                               "long caption"), (b"\xff\xfe\x00", "x.txt", "UTF-8"), (b"  ", "x.txt", "empty")]:
        with pytest.raises(InvalidInputError, match=reason):
            parse_prompt(data, name)


def test_inputs_carry_the_prompt_of_their_sidecar(tmp_path):
    scene = load_input(png(), None, None, max_pixels=10**6, prompt_sidecar=("s.txt", b"a street"))
    assert scene.prompt == "a street"
    assert load_input(png(), None, None, max_pixels=10**6).prompt is None
    (tmp_path / "s.png").write_bytes(png())
    (tmp_path / "s.txt").write_text("plain text")
    assert read_local_input(tmp_path / "s.png", Settings()).prompt == "plain text"
    (tmp_path / "s.prompt.json").write_text(json.dumps({"medium caption": "from json"}))
    assert read_local_input(tmp_path / "s.png", Settings()).prompt == "from json"  # the JSON sidecar wins
    (tmp_path / "s.prompt.json").write_text("not json")
    with pytest.raises(InvalidInputError, match="s.prompt.json"):
        read_local_input(tmp_path / "s.png", Settings())


def test_text_encoder_pads_to_512_with_zeros_and_prompts_differ(wan):
    encoder = TextEncoder(wan)
    embeds = encoder.encode(["a photo of the room", "a red car"])
    assert embeds.shape == (2, 512, 32)
    assert embeds[0, 6:].abs().sum() == 0 and embeds[0, :6].abs().sum() > 0  # 5 words + </s>
    assert embeds[1, 4:].abs().sum() == 0
    assert not torch.allclose(embeds[0, :4], embeds[1, :4])
    cache = EmbeddingCache(lambda prompt: encoder.encode([prompt])[0])
    first = cache.get("a photo of the room", "a photo of the room")
    assert torch.equal(first, embeds[0])
    cache.get("a red car", "a red car")
    assert torch.equal(cache.get("a photo of the room", "a photo of the room"), first)
    assert cache.encoded == 2  # the repeated prompt was not encoded again


def test_image_encoder_keeps_the_release_preprocessing_quirk(wan):
    encoder = ImageEncoder(wan)
    image = torch.rand(40, 48, 3)
    tokens = encoder.encode(image)
    assert tokens.shape == (17, 16)  # (32 / 8)^2 patches + class token, penultimate layer
    # do_rescale=False: pixel values stay 0..255 before CLIP's mean/std
    pixels = (image * 255).round().to(torch.uint8).numpy()
    values = encoder.processor(images=Image.fromarray(pixels), return_tensors="pt").pixel_values
    assert values.max() > 50
    hidden = encoder.model(pixel_values=values, output_hidden_states=True).hidden_states
    assert torch.allclose(tokens, hidden[-2][0])
