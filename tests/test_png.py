"""The memory-bank PNG codec: any reader decodes its files to the same pixels, and its decoder inverts it."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from worldstereo.errors import InvalidInputError
from worldstereo.geometry.camera import Camera
from worldstereo.memory.bank import MemoryFrame, frame_pngs
from worldstereo.png import decode_png, encode_png, quantize


@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 5, 3), (48, 80, 3), (6, 4, 1), (3, 9, 4)])
def test_png_decodes_to_the_same_pixels_in_pillow_and_here(shape):
    pixels = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    pixels[0, 0] = 255  # wrap-around of the Up filter: 0 under 255 and 255 under 0
    if shape[0] > 1:
        pixels[1, 0] = 0
    data = encode_png(pixels)
    decoded = np.asarray(Image.open(io.BytesIO(data)))
    assert np.array_equal(decoded.reshape(shape), pixels.numpy())
    assert torch.equal(decode_png(data), pixels)


def test_png_decoder_refuses_other_files():
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).convert("P").save(buffer, format="PNG")
    for data in (b"not a png", buffer.getvalue()):
        with pytest.raises(InvalidInputError):
            decode_png(data)
    with pytest.raises(InvalidInputError, match="uint8"):
        encode_png(torch.zeros(4, 4, 3))


def test_a_frame_held_as_png_decodes_on_use_and_passes_its_bytes_through():
    image = torch.rand(6, 8, 3, generator=torch.Generator().manual_seed(1))
    image[0, :4, 0] = torch.tensor([0.5, 1.5, 2.5, 254.5]) / 255  # ties round half to even
    camera = Camera.from_fov(torch.eye(4, dtype=torch.float64)[None], 6, 8, 60.0)
    data = frame_pngs([MemoryFrame(image, camera, "input", 0)])[0]
    stored = MemoryFrame(data, camera, "input", 0)
    assert stored.png is data and "image" not in vars(stored)
    assert torch.equal(stored.image, quantize(image).float() / 255)
    assert stored.image.dtype == torch.float32 and torch.equal(quantize(stored.image), quantize(image))
