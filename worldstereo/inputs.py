"""Reading one input scene: an image, an optional depth sidecar and an optional camera file.

Input layout (files in a directory or objects under a key prefix; ``NAME`` is any base name)::

    NAME.png | NAME.jpg | NAME.jpeg | NAME.webp
        The image. Decoded to RGB (EXIF orientation applied; transparency composited over white;
        16-bit grey, CMYK, palette and bilevel images converted); at least 32 px a side
        and at most ``max_input_pixels`` pixels.
    NAME.depth.npy     (optional)
        Float array [H,W] of the image's size, in metres: z-depth along the optical axis for a
        perspective image, Euclidean distance from the centre for a panorama. 0 marks an unknown
        pixel and +inf a pixel with no surface (sky); NaN and negative values are rejected.
    NAME.prompt.json | NAME.txt   (optional; the first one present is used)
        The scene's caption: a JSON object with "long caption", "medium caption", "short caption" or
        "prompt" (first non-empty in that order), or plain UTF-8 text.
    NAME.camera.json   (optional; UTF-8 JSON object, unknown fields rejected)
        Perspective: {"kind": "perspective",
                      "K": [[fx, s, cx], [0, fy, cy], [0, 0, 1]],
                      "c2w": [[r11, r12, r13, tx], ..., [0, 0, 0, 1]],
                      "height": H, "width": W, "scene": {...},
                      "trajectories": [{"name": "walk", "c2w": [pose, ...]}, ...]}
            K in pixels, pixel centres at integer + 0.5. c2w is camera-to-world in OpenCV axes
            (x right, y down, z forward), identity when omitted. "trajectories" (optional) are
            custom camera paths run after the configured presets: each a name ([a-z0-9_], not
            a preset's, "init", "export", "exports" or "state") and camera-to-world waypoint
            poses in the same world; the path starts at the input camera and passes through
            the waypoints.
        Panorama:    {"kind": "panorama", "height": H, "width": W, "scene": {...}}
            A 2:1 (±1%) equirectangular image in a z-up world centred at the origin
            (conventions of ``worldstereo.geometry.spherical``).
        "height" and "width" are optional and must equal the image size when given. "scene" is
        optional and names the synthetic scene the image was rendered from:
        {"kind": "room" | "object" | "panorama360", "seed": <non-negative int>} (a JSON object kept as
        it is: the ``oracle`` generator validates it).

Without a camera file an image is a perspective view of unknown intrinsics and pose.

Release folders (the public release's ``examples``): an image named ``image.png`` (any of the extensions; its
content may be any accepted format) in a folder ``SCENE/`` with ``SCENE/prompt.json`` is a release scene. Its
sidecars ``SCENE/image.depth.npy`` and ``SCENE/image.camera.json`` are read as above, and

    SCENE/camera.json  (the ``examples/images`` layout)
        {"extrinsic": [w2c 4x4, ...], "intrinsic": [K 3x3, ...], ...}: 81 or 21 OpenCV world-to-camera poses
        and intrinsics in pixels of the image. The first pose and intrinsics are the input camera; the poses
        are its one trajectory, ``camera`` (no presets).
    SCENE/renders/traj_eloop/camera.json  (the ``examples/reconstruction`` layout, optional)
        The same keys plus "width" and "height": its first pose and intrinsics (rescaled to the image) are the
        input camera. Without ``camera.json`` the scene runs the presets.
    SCENE/prompt.json
        The prompt (``worldstereo.prompts.parse_prompt``).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field, replace
from typing import Annotated, Literal, get_args

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    JsonValue,
    PositiveInt,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from torch import Tensor

from worldstereo.config import TrajectoryName
from worldstereo.errors import InvalidInputError, InvalidKeyError
from worldstereo.geometry.camera import Camera
from worldstereo.prompts import parse_prompt

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
DEPTH_SUFFIX = ".depth.npy"
CAMERA_SUFFIX = ".camera.json"
MIN_SIDE = 32
PANORAMA_ASPECT_TOLERANCE = 0.01  # relative deviation from 2:1
_FORMATS = {"PNG", "JPEG", "WEBP"}
_SIXTEEN_BIT_GREY = {"I;16", "I;16B", "I;16L", "I"}  # what 16-bit grey PNGs decode to
_ORTHONORMAL_TOLERANCE = 1e-4

InputKind = Literal["perspective", "panorama"]


@dataclass(frozen=True, eq=False)
class SceneInput:
    """A validated input; ``camera`` is set only for a perspective image with a camera file."""

    kind: InputKind
    rgb: Tensor  # [H,W,3] float32 in [0,1]
    depth: Tensor | None  # [H,W] float64 metres; 0 unknown, inf no surface
    camera: Camera | None
    scene: dict | None  # {"kind": ..., "seed": ...} of a synthetic scene
    paths: dict[str, Tensor] = field(default_factory=dict)  # custom trajectories: name -> c2w waypoints [W,4,4]
    prompt: str | None = None  # caption from a prompt sidecar (worldstereo.prompts)
    presets: bool = True  # plan the configured presets (a release folder with a camera path runs only that)

    @property
    def height(self) -> int:
        return self.rgb.shape[0]

    @property
    def width(self) -> int:
        return self.rgb.shape[1]


# --- keys -------------------------------------------------------------------------------------
def is_input_image(key: str) -> bool:
    """Whether ``key`` names an input image (not a sidecar, not a hidden file)."""
    name = key.rsplit("/", 1)[-1]
    stem, dot, extension = name.rpartition(".")
    return (
        bool(dot and stem)
        and not name.startswith(".")
        and f".{extension.lower()}" in IMAGE_EXTENSIONS
        and not stem.endswith((".depth", ".camera"))
    )


def sidecar_keys(image_key: str) -> tuple[str, str]:
    """Depth and camera sidecar keys of an image key: ``a/NAME.png → (a/NAME.depth.npy, a/NAME.camera.json)``."""
    if not is_input_image(image_key):
        raise InvalidKeyError(f"{image_key!r} is not an input image key ({', '.join(IMAGE_EXTENSIONS)})")
    stem = image_key.rpartition(".")[0]
    return stem + DEPTH_SUFFIX, stem + CAMERA_SUFFIX


# --- release folders ------------------------------------------------------------------------------
RELEASE_IMAGE_STEM = "image"
RELEASE_PROMPT, RELEASE_CAMERA, RELEASE_RENDER_CAMERA = "prompt.json", "camera.json", "renders/traj_eloop/camera.json"
RELEASE_PATH_NAME = "camera"


def release_sidecar_keys(image_key: str) -> dict[str, str]:
    """``{"prompt", "camera", "render_camera"}`` keys beside a release folder's ``SCENE/image.*``; ``{}`` otherwise."""
    folder, _, name = image_key.rpartition("/")
    if not folder or name.rpartition(".")[0] != RELEASE_IMAGE_STEM or not is_input_image(image_key):
        return {}
    return {"prompt": f"{folder}/{RELEASE_PROMPT}", "camera": f"{folder}/{RELEASE_CAMERA}",
            "render_camera": f"{folder}/{RELEASE_RENDER_CAMERA}"}


class _ReleaseCameraFile(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)  # motion_list, type, ... are descriptive only

    extrinsic: Annotated[list[Pose], Field(min_length=2)]
    intrinsic: Annotated[list[tuple[Row3, Row3, Row3]], Field(min_length=1)]
    width: PositiveInt | None = None
    height: PositiveInt | None = None


def _release_camera(data: bytes, name: str, height: int, width: int) -> tuple[Camera, Tensor]:
    """The input camera (first pose, first intrinsics at the image's size) and all poses as c2w ``[N,4,4]``."""
    try:
        document = _ReleaseCameraFile.model_validate_json(data)
    except ValidationError as error:
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'document'}: {e['msg']}" for e in error.errors())
        raise InvalidInputError(f"malformed {name} (release layout: extrinsic w2c and intrinsic lists): {detail}") from None
    if len(document.intrinsic) not in (1, len(document.extrinsic)):
        raise InvalidInputError(f"{name} has {len(document.extrinsic)} extrinsics but {len(document.intrinsic)} intrinsics")
    K = torch.tensor(document.intrinsic[0], dtype=torch.float64)
    if document.width and document.height:  # intrinsics of a stated size, rescaled to the image
        K[0] *= width / document.width
        K[1] *= height / document.height
    c2w = torch.linalg.inv(torch.tensor(document.extrinsic, dtype=torch.float64))
    return Camera(K[None], c2w[:1], height, width), c2w


# --- camera file ------------------------------------------------------------------------------
Row3 = tuple[FiniteFloat, FiniteFloat, FiniteFloat]
Row4 = tuple[FiniteFloat, FiniteFloat, FiniteFloat, FiniteFloat]
_IDENTITY: tuple[Row4, ...] = tuple(tuple(float(i == j) for j in range(4)) for i in range(4))  # type: ignore[misc]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# What a camera file's "scene" entry names is for whoever renders it (the oracle validates its own spec).
_SceneSpec = dict[str, JsonValue]


def _rigid(c2w: tuple[Row4, ...]) -> tuple[Row4, ...]:
    if c2w[3] != (0, 0, 0, 1):
        raise ValueError("last row must be [0, 0, 0, 1]")
    R = np.array(c2w)[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=_ORTHONORMAL_TOLERANCE) or np.linalg.det(R) <= 0:
        raise ValueError("rotation must be orthonormal with determinant +1")
    return c2w


Pose = Annotated[tuple[Row4, Row4, Row4, Row4], AfterValidator(_rigid)]


# Names a custom path may not take: the presets', and the stages' and output folders' of a scene.
RESERVED_PATH_NAMES = frozenset(get_args(TrajectoryName)) | {"init", "export", "exports", "state"}


class _CustomPath(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_]{0,63}$")]
    c2w: Annotated[list[Pose], Field(min_length=1)]

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name in RESERVED_PATH_NAMES:
            raise ValueError(f"{name!r} is reserved (presets, stages, output folders)")
        return name


class _PerspectiveFile(_Strict):
    kind: Literal["perspective"]
    K: tuple[Row3, Row3, Row3]
    c2w: Pose = _IDENTITY  # type: ignore[assignment]
    height: PositiveInt | None = None
    width: PositiveInt | None = None
    scene: _SceneSpec | None = None
    trajectories: list[_CustomPath] = []

    @field_validator("trajectories")
    @classmethod
    def _unique(cls, paths: list[_CustomPath]) -> list[_CustomPath]:
        names = [path.name for path in paths]
        if len(set(names)) != len(names):
            raise ValueError(f"trajectory names must be unique, got {names}")
        return paths

    @field_validator("K")
    @classmethod
    def _intrinsics(cls, K: tuple[Row3, Row3, Row3]) -> tuple[Row3, Row3, Row3]:
        if K[1][0] != 0 or K[2] != (0, 0, 1):
            raise ValueError("must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]]")
        if K[0][0] <= 0 or K[1][1] <= 0:
            raise ValueError("focal lengths must be positive")
        return K


class _PanoramaFile(_Strict):
    kind: Literal["panorama"]
    height: PositiveInt | None = None
    width: PositiveInt | None = None
    scene: _SceneSpec | None = None


_CameraFile = _PerspectiveFile | _PanoramaFile
_CAMERA_FILE = TypeAdapter(Annotated[_CameraFile, Field(discriminator="kind")])


def _parse_camera_file(data: bytes) -> _CameraFile:
    try:
        return _CAMERA_FILE.validate_json(data)
    except ValidationError as error:
        detail = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'document'}: {e['msg']}" for e in error.errors()
        )
        raise InvalidInputError(f"malformed camera JSON: {detail}") from None


def perspective_document(camera: Camera, scene: dict | None = None) -> dict:
    """The camera file of a single perspective camera."""
    if len(camera) != 1:
        raise ValueError(f"a camera file holds one camera, got {len(camera)}")
    document = {
        "kind": "perspective",
        "K": camera.K[0].tolist(),
        "c2w": camera.c2w[0].tolist(),
        "height": camera.height,
        "width": camera.width,
    }
    return document | ({"scene": scene} if scene is not None else {})


def panorama_document(height: int, width: int, scene: dict | None = None) -> dict:
    """The camera file of an equirectangular panorama."""
    document = {"kind": "panorama", "height": height, "width": width}
    return document | ({"scene": scene} if scene is not None else {})


# --- image and depth --------------------------------------------------------------------------
def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise InvalidInputError(f"image of {width}x{height} exceeds the limit of {max_pixels} pixels")
    if min(width, height) < MIN_SIDE:
        raise InvalidInputError(f"image of {width}x{height} is too small (at least {MIN_SIDE} px a side)")


def _decode_image(data: bytes, max_pixels: int) -> Tensor:
    """RGB ``[H,W,3]`` float32 in ``[0,1]``; dimensions are checked from the header before decoding."""
    if not data:
        raise InvalidInputError("image is empty (0 bytes)")
    Image.MAX_IMAGE_PIXELS = max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InvalidInputError(f"image exceeds the limit of {max_pixels} pixels (read from its header)") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            raise InvalidInputError("not an image (unrecognised format or corrupt header)") from None
    with image:
        if image.format not in _FORMATS:
            raise InvalidInputError(f"unsupported image format {image.format}; expected PNG, JPEG or WebP")
        _check_size(*image.size, max_pixels)
        try:
            image.load()
            rgb = _to_rgb(ImageOps.exif_transpose(image))
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise InvalidInputError(f"image is truncated or corrupt: {error}") from None
    return torch.from_numpy(rgb)


def _to_rgb(image: Image.Image) -> np.ndarray:
    """RGB float32 ``[H,W,3]`` in ``[0,1]`` of any decoded mode: 16-bit grey keeps its range, transparency is
    composited over white, CMYK, palette, grey and bilevel images are converted."""
    if image.mode in _SIXTEEN_BIT_GREY:
        grey = np.asarray(image).astype(np.float32) / 65535.0
        return np.repeat(grey.clip(0.0, 1.0)[..., None], 3, axis=-1)
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(image.convert("RGB")).astype(np.float32) / 255.0


def _decode_depth(data: bytes, shape: tuple[int, int]) -> Tensor:
    """Depth ``[H,W]`` float64 from ``.npy`` bytes; the header is checked before the data is read."""
    if not data:
        raise InvalidInputError("depth sidecar is empty (0 bytes)")
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        array_shape, _, dtype = read_header(stream)
    except (ValueError, OSError, EOFError) as error:
        raise InvalidInputError(f"depth sidecar is not a .npy array: {error}") from None
    if dtype.kind != "f":
        raise InvalidInputError(f"depth sidecar must hold floating-point values, got {dtype}")
    if tuple(array_shape) != shape:
        raise InvalidInputError(f"depth sidecar has shape {tuple(array_shape)}, the image is {shape}")
    try:
        depth = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise InvalidInputError(f"depth sidecar is truncated or corrupt: {error}") from None
    if np.isnan(depth).any():
        raise InvalidInputError("depth sidecar contains NaN")
    if (depth < 0).any():
        raise InvalidInputError("depth sidecar contains negative values")
    if not (np.isfinite(depth) & (depth > 0)).any():
        raise InvalidInputError("depth sidecar has no valid value (all zero or infinite)")
    return torch.from_numpy(depth.astype(np.float64))


def _check_stated_size(document: _CameraFile, height: int, width: int) -> None:
    for name, stated, actual in (("height", document.height, height), ("width", document.width, width)):
        if stated is not None and stated != actual:
            raise InvalidInputError(f"camera file says {name} {stated}, the image has {actual}")


def load_input(
    image_bytes: bytes,
    depth_bytes: bytes | None,
    camera_json: bytes | None,
    *,
    max_pixels: int,
    prompt_sidecar: tuple[str, bytes] | None = None,
    release_files: dict[str, bytes] | None = None,
) -> SceneInput:
    """Validate and decode one input; raises ``InvalidInputError`` with the reason on bad input.

    ``prompt_sidecar``: name and bytes of its prompt file. ``release_files`` maps the present
    ``release_sidecar_keys`` roles to their bytes (a release folder).
    """
    prompt = None if prompt_sidecar is None else parse_prompt(prompt_sidecar[1], prompt_sidecar[0])
    document = None if camera_json is None else _parse_camera_file(camera_json)
    rgb = _decode_image(image_bytes, max_pixels)
    height, width = rgb.shape[:2]
    if document is not None:
        _check_stated_size(document, height, width)
    kind: InputKind = "perspective" if document is None else document.kind
    if kind == "panorama" and abs(width / height / 2 - 1) > PANORAMA_ASPECT_TOLERANCE:
        raise InvalidInputError(f"panorama of {width}x{height} is not 2:1 (±{PANORAMA_ASPECT_TOLERANCE:.0%})")
    camera = None
    if isinstance(document, _PerspectiveFile):
        K = torch.tensor(document.K, dtype=torch.float64)[None]
        camera = Camera(K, torch.tensor(document.c2w, dtype=torch.float64)[None], height, width)
    scene_input = SceneInput(
        kind=kind,
        rgb=rgb,
        depth=None if depth_bytes is None else _decode_depth(depth_bytes, (height, width)),
        camera=camera,
        scene=None if document is None or document.scene is None else dict(document.scene),
        paths={path.name: torch.tensor(path.c2w, dtype=torch.float64) for path in getattr(document, "trajectories", [])},
        prompt=prompt,
    )
    return _with_release_files(scene_input, release_files or {}, document is None)


def _with_release_files(scene_input: SceneInput, files: dict[str, bytes], no_camera_file: bool) -> SceneInput:
    """A release folder's prompt, and (unless a camera file gave one) its camera and camera path."""
    updates: dict = {}
    if "prompt" in files and scene_input.prompt is None:
        updates["prompt"] = parse_prompt(files["prompt"], RELEASE_PROMPT)
    size = (scene_input.height, scene_input.width)
    if no_camera_file and "camera" in files:
        camera, c2w = _release_camera(files["camera"], RELEASE_CAMERA, *size)
        updates.update(camera=camera, paths={RELEASE_PATH_NAME: c2w}, presets=False)
    elif no_camera_file and "render_camera" in files:
        updates["camera"] = _release_camera(files["render_camera"], RELEASE_RENDER_CAMERA, *size)[0]
    return replace(scene_input, **updates) if updates else scene_input
