"""The 2D memory bank: the input image, panorama views and temporally downsampled generated frames."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from worldstereo.errors import InvalidInputError
from worldstereo.geometry.camera import Camera
from worldstereo.png import decode_png, encode_png, in_threads, quantize

_FORMAT = "worldstereo.memory_bank/1"
_ARRAYS = "memory_bank.npz"
_MANIFEST = "memory_bank.json"


def released_bank_indices(num_frames: int, count: int) -> list[int]:
    """Frames of a clip that enter the bank under the released rules: ``count`` frames after frame 0, ending at
    the last, the larger gaps first (21 frames, 8 -> 3,6,9,12,14,16,18,20; 4 -> 5,10,15,20)."""
    if num_frames < 2 or count < 1:
        raise InvalidInputError(f"need a clip of at least 2 frames and count >= 1, got {num_frames}, {count}")
    count = min(count, num_frames - 1)
    base, extra = divmod(num_frames - 1, count)
    gaps = [base + 1] * extra + [base] * (count - extra)
    return torch.tensor(gaps).cumsum(0).tolist()


@dataclass(frozen=True)
class MemoryFrame:
    """One stored frame: its ``pixels`` ``[H,W,3]``, its ``camera`` (one camera), where it came from and its frame
    index there.

    ``pixels`` are floats in [0, 1], or 8-bit values as a uint8 tensor or as PNG bytes (frames read back from a
    snapshot): :attr:`image` decodes and scales those on first use, :attr:`png` passes PNG bytes through.
    """

    pixels: Tensor | bytes
    camera: Camera
    source: str
    index: int

    @cached_property
    def image(self) -> Tensor:
        """``[H,W,3]`` floats in [0, 1]."""
        pixels = self.decoded()
        return pixels.float() / 255 if pixels.dtype == torch.uint8 else pixels

    def decoded(self) -> Tensor:
        """``pixels`` as a tensor: the floats, or the 8-bit values (PNG bytes decoded)."""
        return decode_png(self.pixels) if isinstance(self.pixels, bytes) else self.pixels

    @property
    def png(self) -> bytes:
        """The frame as PNG bytes: the stored ones, else its 8-bit values (floats rounded) encoded."""
        if isinstance(self.pixels, bytes):
            return self.pixels
        return encode_png(self.pixels if self.pixels.dtype == torch.uint8 else quantize(self.pixels))


def frame_pngs(frames: Sequence[MemoryFrame]) -> list[bytes]:
    """:attr:`MemoryFrame.png` of every frame, encoded on concurrent threads."""
    return in_threads(lambda frame: frame.png, frames)


class MemoryBank:
    """An append-only list of frames that may differ in size."""

    def __init__(self, frames: tuple[MemoryFrame, ...] = ()) -> None:
        self._frames: list[MemoryFrame] = list(frames)

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, index: int) -> MemoryFrame:
        return self._frames[index]

    @property
    def frames(self) -> tuple[MemoryFrame, ...]:
        return tuple(self._frames)

    @property
    def sources(self) -> list[str]:
        return [f.source for f in self._frames]

    def indices_of(self, source: str) -> list[int]:
        """Bank indices of the frames added under ``source``."""
        return [i for i, f in enumerate(self._frames) if f.source == source]

    def add(self, images: Tensor, cameras: Camera, source: str, frames: Sequence[int] | None = None) -> list[int]:
        """Store the ``frames`` (indices into ``images [N,H,W,3]``; default all) of a video; returns their bank indices.

        Each stored frame remembers its index in the video, so generated keyframes map back to their cameras.
        Frames are kept on the CPU: only the stored ones leave a GPU.
        """
        if images.ndim != 4 or images.shape[0] != len(cameras) or images.shape[1:3] != (cameras.height, cameras.width):
            raise InvalidInputError(
                f"images must be [{len(cameras)},{cameras.height},{cameras.width},C], got {tuple(images.shape)}"
            )
        if not source:
            raise InvalidInputError("a memory frame needs a source tag")
        frames = list(range(len(cameras))) if frames is None else [int(i) for i in frames]
        if any(not 0 <= i < len(cameras) for i in frames):
            raise InvalidInputError(f"frame indices must lie in [0, {len(cameras)}), got {frames}")
        first = len(self._frames)
        for index in frames:
            self._frames.append(MemoryFrame(images[index].to("cpu", copy=True), cameras[index].to("cpu"), source, index))
        return list(range(first, len(self._frames)))

    def cameras(self) -> Camera:
        """Every frame as one batch at the largest frame size, each ``K`` rescaled to keep its field of view.

        The rays through each frame's image corners (and so its frustum) are unchanged; pixel-level
        work on a frame uses ``bank[i].camera``, which has the frame's own size.
        """
        if not self._frames:
            raise InvalidInputError("the memory bank is empty")
        height = max(f.camera.height for f in self._frames)
        width = max(f.camera.width for f in self._frames)
        return Camera.cat([f.camera.resized(height, width) for f in self._frames])

    # --- persistence --------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write ``memory_bank.npz`` (images, K, c2w) and ``memory_bank.json`` (sources, indices, sizes)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / _ARRAYS, **self._arrays())
        (directory / _MANIFEST).write_text(json.dumps(self._manifest(), indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> MemoryBank:
        directory = Path(directory)
        with _unreadable(directory):
            with np.load(directory / _ARRAYS, allow_pickle=False) as arrays:
                return cls._from_parts(dict(arrays), json.loads((directory / _MANIFEST).read_text()))

    def to_bytes(self) -> bytes:
        """One ``.npz`` holding the arrays and the JSON manifest."""
        buffer = io.BytesIO()
        manifest = np.frombuffer(json.dumps(self._manifest()).encode(), dtype=np.uint8)
        np.savez(buffer, manifest=manifest, **self._arrays())
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> MemoryBank:
        with _unreadable("memory bank bytes"):
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                parts = dict(arrays)
            return cls._from_parts(parts, json.loads(parts.pop("manifest").tobytes().decode()))

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"image_{i:06d}": f.decoded().detach().cpu().numpy() for i, f in enumerate(self._frames)}
        if self._frames:
            arrays["K"] = torch.cat([f.camera.K for f in self._frames]).detach().cpu().numpy()
            arrays["c2w"] = torch.cat([f.camera.c2w for f in self._frames]).detach().cpu().numpy()
        return arrays

    def _manifest(self) -> dict[str, object]:
        return {
            "format": _FORMAT,
            "frames": [
                {"source": f.source, "index": f.index, "height": f.camera.height, "width": f.camera.width}
                for f in self._frames
            ],
        }

    @classmethod
    def _from_parts(cls, arrays: dict[str, np.ndarray], manifest: dict) -> MemoryBank:
        if manifest.get("format") != _FORMAT:
            raise InvalidInputError(f"not a memory bank: format {manifest.get('format')!r}")
        frames = []
        for i, meta in enumerate(manifest["frames"]):
            K = torch.from_numpy(arrays["K"][i : i + 1])
            c2w = torch.from_numpy(arrays["c2w"][i : i + 1])
            camera = Camera(K, c2w, int(meta["height"]), int(meta["width"]))
            image = torch.from_numpy(arrays[f"image_{i:06d}"])
            frames.append(MemoryFrame(image, camera, str(meta["source"]), int(meta["index"])))
        return cls(tuple(frames))


@contextmanager
def _unreadable(what: object) -> Iterator[None]:
    """Report a missing, truncated or malformed saved bank as invalid input."""
    try:
        yield
    except (OSError, KeyError, IndexError, TypeError, ValueError, zipfile.BadZipFile) as exc:
        if isinstance(exc, InvalidInputError):
            raise
        raise InvalidInputError(f"cannot read memory bank from {what}: {exc}") from exc
