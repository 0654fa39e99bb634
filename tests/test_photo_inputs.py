"""Ordinary photos decode to the RGB they show: grey, transparency, 16-bit, CMYK, EXIF orientation, odd aspect."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from worldstereo.inputs import is_input_image, load_input

RNG = np.random.default_rng(0)
RGB = (RNG.random((40, 60, 3)) * 255).astype(np.uint8)


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    return load_input(data, None, None, max_pixels=10**8).rgb.numpy()


def test_grey_and_bilevel_photos_become_equal_channels():
    grey = Image.fromarray(RGB).convert("L")
    for image in (grey, grey.convert("1")):
        rgb = decode(encode(image))
        expected = np.asarray(image.convert("L"), dtype=np.float32) / 255
        np.testing.assert_allclose(rgb, np.repeat(expected[..., None], 3, axis=-1), atol=1e-6)


def test_sixteen_bit_grey_keeps_its_range():
    ramp = np.linspace(0, 65535, 40 * 60).reshape(40, 60).astype(np.uint16)
    rgb = decode(encode(Image.fromarray(ramp)))
    np.testing.assert_allclose(rgb[..., 0], ramp / 65535, atol=1e-6)
    assert float(rgb.mean()) == pytest.approx(0.5, abs=1e-3)  # not saturated to white


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_transparent_pixels_are_white_and_opaque_ones_keep_their_colour(fmt):
    rgba = np.concatenate([RGB, np.full((40, 60, 1), 255, np.uint8)], axis=-1)
    rgba[:, :30, 3] = 0
    rgb = decode(encode(Image.fromarray(rgba), fmt, **({"lossless": True} if fmt == "WEBP" else {})))
    np.testing.assert_allclose(rgb[:, :30], 1.0, atol=1e-6)
    np.testing.assert_allclose(rgb[:, 30:], RGB[:, 30:] / 255, atol=1e-6)


def test_palette_with_transparency_and_cmyk_jpeg():
    palette = Image.fromarray(RGB).convert("P")
    palette.info["transparency"] = 0
    assert decode(encode(palette)).shape == (40, 60, 3)
    flat = np.full((40, 60, 3), (200, 40, 90), np.uint8)
    rgb = decode(encode(Image.fromarray(flat).convert("CMYK"), "JPEG", quality=100))
    np.testing.assert_allclose(rgb.reshape(-1, 3).mean(0), np.array([200, 40, 90]) / 255, atol=0.03)


def test_exif_orientation_is_applied():
    y, x = np.mgrid[0:40, 0:60]
    smooth = np.stack([x * 4, y * 6, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    image = Image.fromarray(smooth)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 deg clockwise to display
    rgb = decode(encode(image, "JPEG", exif=exif, quality=100))
    assert rgb.shape == (60, 40, 3)
    assert float(np.abs(rgb - np.rot90(smooth, k=-1) / 255).max()) < 0.05


def test_odd_aspect_and_non_ascii_names():
    odd = (RNG.random((33, 517, 3)) * 255).astype(np.uint8)
    assert decode(encode(Image.fromarray(odd))).shape == (33, 517, 3)
    assert is_input_image("drops/café ünïcode.JPG") and is_input_image("写真.png")
