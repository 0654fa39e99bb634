"""Input layout: key naming, validation of bad inputs, and a round trip through the sample writer."""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from worldstereo.errors import InvalidInputError, InvalidKeyError, PermanentError
from worldstereo.geometry.spherical import equirect_directions
from worldstereo.inputs import is_input_image, load_input, sidecar_keys
from worldstereo.synthetic import make_scene
from worldstereo.synthetic.samples import write_samples

MAX_PIXELS = 1_000_000


def _image(width: int, height: int, fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` but which carries almost no pixel data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


EYE = [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]]


def _panorama(**overrides) -> bytes:
    return json.dumps({"kind": "panorama"} | overrides).encode()


def _perspective(**overrides) -> bytes:
    document = {"kind": "perspective", "K": [[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]], "height": 48, "width": 64}
    return json.dumps(document | overrides).encode()


# --- keys -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("scenes/kitchen.png", True),
        ("a/b/c.JPG", True),
        ("x.jpeg", True),
        ("x.webp", True),
        ("x.depth.npy", False),
        ("x.camera.json", False),
        ("x.depth.png", False),
        ("x.gif", False),
        (".png", False),
        ("dir/._photo.jpg", False),
        ("noextension", False),
    ],
)
def test_is_input_image(key, expected):
    assert is_input_image(key) is expected


def test_sidecar_keys():
    assert sidecar_keys("in/batch1/room.png") == ("in/batch1/room.depth.npy", "in/batch1/room.camera.json")
    assert sidecar_keys("v1.2.photo.JPEG") == ("v1.2.photo.depth.npy", "v1.2.photo.camera.json")
    with pytest.raises(InvalidKeyError):
        sidecar_keys("room.depth.npy")


# --- happy paths ------------------------------------------------------------------------------
def _read(path):
    depth_key, camera_key = sidecar_keys(path.name)
    return path.read_bytes(), (path.parent / depth_key).read_bytes(), (path.parent / camera_key).read_bytes()


def test_samples_round_trip_to_ground_truth(tmp_path):
    paths = write_samples(tmp_path, seed=1, height=48, width=80, panorama_height=40)
    assert [p.name for p in paths] == ["room.png", "object.png", "panorama.png"]
    for path in paths:
        loaded = load_input(*_read(path), max_pixels=MAX_PIXELS)
        assert loaded.scene is not None and loaded.scene["seed"] == 1
        scene = make_scene(loaded.scene["kind"], loaded.scene["seed"])
        assert loaded.rgb.dtype == torch.float32 and loaded.depth is not None
        if loaded.kind == "perspective":
            assert (loaded.height, loaded.width) == (48, 80)
            reference = scene.input_camera(48, 80)
            assert torch.equal(loaded.camera.K, reference.K) and torch.equal(loaded.camera.c2w, reference.c2w)
            views = scene.render(loaded.camera)
            assert (loaded.rgb - views.rgb[0]).abs().max() <= 0.5 / 255 + 1e-6
            points = loaded.camera.backproject(loaded.depth[None])[0].reshape(-1, 3)
        else:
            assert loaded.kind == "panorama" and loaded.camera is None
            assert (loaded.height, loaded.width) == (40, 80)
            points = (equirect_directions(40, 80) * loaded.depth[..., None]).reshape(-1, 3)
        gap = scene.geometry.signed_distance(points).abs().amin(dim=1)
        assert (gap / loaded.depth.reshape(-1)).max() < 1e-6  # float32 sidecar precision


def test_image_without_sidecars_is_a_perspective_view_of_unknown_camera():
    loaded = load_input(_image(64, 48, "JPEG"), None, None, max_pixels=MAX_PIXELS)
    assert loaded.kind == "perspective" and loaded.camera is None and loaded.depth is None and loaded.scene is None
    assert loaded.rgb.shape == (48, 64, 3) and 0 <= loaded.rgb.min() and loaded.rgb.max() <= 1


def test_camera_file_pose_defaults_to_identity_and_depth_may_mark_unknown_and_sky():
    depth = np.full((48, 64), 2.0, dtype=np.float32)
    depth[0, :] = np.inf
    depth[1, :] = 0.0
    loaded = load_input(_image(64, 48, "WEBP"), _npy(depth), _perspective(), max_pixels=MAX_PIXELS)
    assert torch.equal(loaded.camera.c2w[0], torch.eye(4, dtype=torch.float64))
    assert loaded.camera.K[0, 0, 0] == 50.0
    assert loaded.depth.dtype == torch.float64 and torch.isinf(loaded.depth[0]).all()


def test_camera_file_carries_custom_paths_in_file_order():
    moved = [[1.0, 0, 0, 0.5], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]]
    paths = [{"name": "walk_2", "c2w": [moved, EYE]}, {"name": "dolly", "c2w": [moved]}]
    scene = load_input(_image(64, 48), None, _perspective(trajectories=paths), max_pixels=MAX_PIXELS)
    assert list(scene.paths) == ["walk_2", "dolly"]
    assert torch.equal(scene.paths["walk_2"], torch.tensor([moved, EYE], dtype=torch.float64))
    assert scene.paths["dolly"].shape == (1, 4, 4)
    assert load_input(_image(64, 48), None, _perspective(), max_pixels=MAX_PIXELS).paths == {}


def test_panorama_within_one_percent_of_two_to_one_is_accepted():
    loaded = load_input(_image(129, 64), None, b'{"kind": "panorama"}', max_pixels=MAX_PIXELS)
    assert loaded.kind == "panorama" and loaded.camera is None


# --- bad images -------------------------------------------------------------------------------
def _truncated_png() -> bytes:
    data = _image(64, 64)
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (b"", "empty"),
        (b"hello, this is text", "not an image"),
        (_truncated_png(), "truncated or corrupt"),
        (_image(1, 1), "too small"),
        (_image(31, 64), "too small"),
        (_image(64, 48, "GIF"), "unsupported image format"),
        (_image(1200, 900), "exceeds the limit"),
        (_png_header_only(50_000, 40_000), "exceeds the limit"),
        (_png_header_only(4_000_000, 4_000_000), "exceeds the limit"),
    ],
    ids=["empty", "text", "truncated", "1x1", "narrow", "gif", "too-many-pixels", "bomb", "huge-bomb"],
)
def test_bad_images_are_rejected(image, message):
    with pytest.raises(InvalidInputError, match=message) as caught:
        load_input(image, None, None, max_pixels=MAX_PIXELS)
    assert isinstance(caught.value, PermanentError)


def test_panorama_must_be_two_to_one():
    with pytest.raises(InvalidInputError, match="not 2:1"):
        load_input(_image(132, 64), None, b'{"kind": "panorama"}', max_pixels=MAX_PIXELS)
    with pytest.raises(InvalidInputError, match="not 2:1"):
        load_input(_image(64, 48), None, b'{"kind": "panorama"}', max_pixels=MAX_PIXELS)


# --- bad depth sidecars -----------------------------------------------------------------------
def _with_nan() -> np.ndarray:
    depth = np.ones((48, 64), dtype=np.float32)
    depth[3, 4] = np.nan
    return depth


def _with_negative() -> np.ndarray:
    depth = np.ones((48, 64), dtype=np.float32)
    depth[3, 4] = -0.5
    return depth


@pytest.mark.parametrize(
    ("depth", "message"),
    [
        (b"", "empty"),
        (b"not a numpy file", "not a .npy array"),
        (_npy(np.ones((48, 64), dtype=np.float32))[:-100], "truncated or corrupt"),
        (_npy(np.ones((64, 48), dtype=np.float32)), r"shape \(64, 48\), the image is \(48, 64\)"),
        (_npy(np.ones((48, 64, 1), dtype=np.float32)), "shape"),
        (_npy(np.ones((48, 64), dtype=np.int32)), "floating-point"),
        (_npy(_with_nan()), "NaN"),
        (_npy(_with_negative()), "negative"),
        (_npy(np.zeros((48, 64), dtype=np.float32)), "no valid value"),
        (_npy(np.full((48, 64), np.inf, dtype=np.float32)), "no valid value"),
    ],
    ids=["empty", "garbage", "truncated", "transposed", "3d", "integer", "nan", "negative", "zero", "inf"],
)
def test_bad_depth_sidecars_are_rejected(depth, message):
    with pytest.raises(InvalidInputError, match=message):
        load_input(_image(64, 48), depth, None, max_pixels=MAX_PIXELS)


# --- bad camera files -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("camera", "message"),
    [
        (b"{not json", "malformed camera JSON"),
        (b"\xff\xfe\x00", "malformed camera JSON"),
        (b"[1, 2, 3]", "malformed camera JSON"),
        (b'{"K": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}', "kind"),
        (b'{"kind": "fisheye"}', "kind"),
        (b'{"kind": "perspective"}', "K"),
        (_perspective(K=[[50, 0, 32], [0, 50, 24]]), "K"),
        (_perspective(K=[[-50, 0, 32], [0, 50, 24], [0, 0, 1]]), "focal lengths must be positive"),
        (_perspective(K=[[50, 0, 32], [0, 50, 24], [0, 1, 1]]), r"\[0, 0, 1\]"),
        (_perspective().replace(b"50.0, 0, 32", b"NaN, 0, 32"), "K"),
        (_perspective(c2w=[[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "orthonormal"),
        (_perspective(c2w=[[-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "orthonormal"),
        (_perspective(c2w=[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]), "last row"),
        (_perspective(focal=50), "focal"),
        (_perspective(height=480), "height 480, the image has 48"),
        (_perspective(scene=["room", 0]), "scene"),
        (_perspective(trajectories=[{"name": "Walk", "c2w": [EYE]}]), "trajectories.0.name"),
        (_perspective(trajectories=[{"name": "orbit", "c2w": [EYE]}]), "'orbit' is reserved"),
        (_perspective(trajectories=[{"name": "init", "c2w": [EYE]}]), "'init' is reserved"),
        (_perspective(trajectories=[{"name": "a", "c2w": [EYE]}, {"name": "a", "c2w": [EYE]}]), "unique"),
        (_perspective(trajectories=[{"name": "a", "c2w": []}]), "trajectories.0.c2w"),
        (_perspective(trajectories=[{"name": "a", "c2w": [[[2, 0, 0, 0], *EYE[1:]]]}]), "orthonormal"),
        (_panorama(trajectories=[{"name": "a", "c2w": [EYE]}]), "trajectories"),
    ],
    ids=[
        "syntax", "not-utf8", "not-object", "no-kind", "unknown-kind", "no-K", "K-shape", "K-focal",
        "K-last-row", "K-nan", "c2w-scaled", "c2w-reflection", "c2w-last-row", "unknown-field",
        "size-mismatch", "scene-not-object", "path-name", "path-preset-name", "path-stage-name",
        "path-names-repeat", "path-without-poses", "path-pose-scaled", "panorama-path",
    ],
)
def test_bad_camera_files_are_rejected(camera, message):
    with pytest.raises(InvalidInputError, match=message):
        load_input(_image(64, 48), None, camera, max_pixels=MAX_PIXELS)


@pytest.mark.parametrize("spec, message", [({"kind": "forest", "seed": 0}, "unknown scene kind"),
                                           ({"kind": "room", "seed": -1}, "seed"), ({"kind": "room", "seed": "1"}, "seed")])
def test_a_scene_entry_is_read_as_given_and_validated_by_its_renderer(spec, message):
    loaded = load_input(_image(64, 48), None, _perspective(scene=spec), max_pixels=MAX_PIXELS)
    assert loaded.scene == spec
    with pytest.raises(InvalidInputError, match=message):
        make_scene(loaded.scene["kind"], loaded.scene["seed"])
