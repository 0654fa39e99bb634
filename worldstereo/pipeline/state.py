"""Scene state between stages — the 3D cache, the memory bank, the planned trajectories — and its snapshots.

A snapshot is written after every stage under ``outputs/state/{stage}/`` so that a restarted scene resumes
from the last finished stage with the cache and memory bank exactly as they were. Init writes the whole
state; a later stage writes only what it added (the cache only grows: a merge keeps every existing point in
order and appends the new ones; the memory bank only appends), on top of the snapshot it started from. Bank
frames are stored as 8-bit PNG bytes, and every stage reads them back that way (decoding a frame only when it
is used), so a resumed scene computes exactly what an undisturbed one does. A scene's snapshots together hold
its final state once. Snapshots holding bank frames as uint8 arrays (``image_*``) still load.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from worldstereo.geometry.camera import Camera
from worldstereo.geometry.trajectory import Trajectory, load_trajectory_json, trajectory_to_json
from worldstereo.memory.bank import MemoryBank, MemoryFrame, frame_pngs
from worldstereo.memory.cache import Cache3D
from worldstereo.storage.base import ObjectStore
from worldstereo.storage.keys import output_key

READERS = 4  # concurrent reads of a snapshot's deltas and embeddings while its base loads


@dataclass(frozen=True)
class Start:
    """Where a group of trajectories begins: a given frame, its camera and z-depth."""

    name: str  # "" for a perspective input, "v{index}" for a panorama start view
    image: Tensor  # [H,W,3]
    camera: Camera  # 1 camera
    depth: Tensor  # [H,W]


@dataclass
class SceneState:
    """Mutable state of one scene while its trajectories run."""

    scene_id: str
    kind: str
    cache: Cache3D
    bank: MemoryBank
    starts: list[Start]
    plans: list[tuple[str, int, Trajectory]]  # (record name, start index, trajectory), in run order
    scene_spec: dict | None
    voxel_size: float
    prompt: str | None = None  # the input's caption
    embeddings: dict[str, Tensor] = field(default_factory=dict)  # generator encoder outputs (text, start frames)
    choices: list[dict] = field(default_factory=list)  # the planner's choices: name, origin, score, runners-up
    base: Loaded | None = None  # the snapshot this state was read from (None: built from the input)


@dataclass(frozen=True)
class Loaded:
    """Which snapshot a state was read from, and its cache points then (what a delta is written against)."""

    stage: str
    points: Tensor
    bank_frames: int
    embeddings: frozenset[str] = frozenset()
    starts: int = 0


def _plans(meta: dict) -> list[tuple[str, int, Trajectory]]:
    return [(p["name"], p["start"], load_trajectory_json(p["trajectory"])) for p in meta["plans"]]


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _arrays(data: bytes) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file's bytes."""
    with np.load(io.BytesIO(data)) as arrays:
        return {name: arrays[name] for name in arrays.files}


def _camera_arrays(camera: Camera) -> dict[str, np.ndarray]:
    return {"K": camera.K.double().cpu().numpy(), "c2w": camera.c2w.double().cpu().numpy(),
            "size": np.array([camera.height, camera.width])}


def _camera_from(arrays, prefix: str = "") -> Camera:
    size = arrays[f"{prefix}size"]
    return Camera(torch.from_numpy(arrays[f"{prefix}K"]), torch.from_numpy(arrays[f"{prefix}c2w"]),
                  int(size[0]), int(size[1]))


def _frame_arrays(frames: Sequence[MemoryFrame]) -> dict[str, np.ndarray]:
    """The frames' PNG bytes end to end (``pngs``, ``png_ends``) and their cameras (``frame_K``, ``frame_c2w``,
    ``frame_size``), in five arrays."""
    pngs = frame_pngs(frames)
    return {"pngs": np.frombuffer(b"".join(pngs), np.uint8),
            "png_ends": np.cumsum([len(png) for png in pngs], dtype=np.int64),
            "frame_K": np.array([f.camera.K[0].double().cpu().numpy() for f in frames]).reshape(-1, 3, 3),
            "frame_c2w": np.array([f.camera.c2w[0].double().cpu().numpy() for f in frames]).reshape(-1, 4, 4),
            "frame_size": np.array([[f.camera.height, f.camera.width] for f in frames], np.int64).reshape(-1, 2)}


def _frames(arrays, listed: list[dict]) -> tuple[MemoryFrame, ...]:
    """The frames of :func:`_frame_arrays` with their ``source`` and ``index`` (older snapshots: one uint8 array
    ``image_{i}`` and camera ``camera_{i}_*`` per frame)."""
    if "pngs" not in arrays:
        return tuple(MemoryFrame(torch.from_numpy(arrays[f"image_{i:06d}"]), _camera_from(arrays, f"camera_{i:06d}_"),
                                 frame["source"], frame["index"]) for i, frame in enumerate(listed))
    data, ends = arrays["pngs"].tobytes(), arrays["png_ends"].tolist()
    K, c2w = torch.from_numpy(arrays["frame_K"]), torch.from_numpy(arrays["frame_c2w"])
    sizes = arrays["frame_size"].tolist()
    return tuple(MemoryFrame(data[start:end], Camera(K[i:i + 1], c2w[i:i + 1], *sizes[i]), frame["source"],
                             frame["index"]) for i, (start, end, frame) in enumerate(zip([0, *ends], ends, listed)))


def _start_arrays(starts: Sequence[Start], prefix: str = "") -> dict[str, np.ndarray]:
    arrays = {}
    for i, start in enumerate(starts):
        arrays.update({f"{prefix}{i}_image": start.image.cpu().numpy(), f"{prefix}{i}_depth": start.depth.cpu().numpy()})
        arrays.update({f"{prefix}{i}_{k}": v for k, v in _camera_arrays(start.camera).items()})
    return arrays


def _starts(arrays, names: list[str], prefix: str = "") -> list[Start]:
    return [Start(name, torch.from_numpy(arrays[f"{prefix}{i}_image"]), _camera_from(arrays, f"{prefix}{i}_"),
                  torch.from_numpy(arrays[f"{prefix}{i}_depth"])) for i, name in enumerate(names)]


def _apply_deltas(state: SceneState, deltas: list[tuple[dict, dict[str, np.ndarray]]]) -> None:
    """Append the deltas' points (one concatenation), bank frames and starts, in order, to a full snapshot's state."""
    cache = state.cache

    def grown(name: str, base: Tensor) -> Tensor:
        return torch.cat([base, *(torch.from_numpy(arrays[name]).to(base) for _, arrays in deltas)])

    state.cache = Cache3D(grown("points", cache.points), grown("colors", cache.colors), grown("sources", cache.sources),
                          deltas[-1][0]["names"], cache.voxel_size)
    added = (frame for meta, arrays in deltas for frame in _frames(arrays, meta["frames"]))
    state.bank = MemoryBank((*state.bank.frames, *added))
    for meta, arrays in deltas:
        state.starts += _starts(arrays, meta.get("new_starts", []), "start_")


class StateStore:
    """Reads and writes scene state snapshots under one scene's outputs prefix."""

    def __init__(self, store: ObjectStore, bucket: str, scene_id: str) -> None:
        self.store, self.bucket, self.scene_id = store, bucket, scene_id

    def key(self, *parts: str) -> str:
        return output_key(self.scene_id, *parts)

    def save(self, stage: str, state: SceneState) -> list[str]:
        """Snapshot ``state`` as ``stage`` (a delta on the snapshot it was read from when it only grew); returns
        the keys written."""
        base = state.base
        if base is not None and len(state.bank) >= base.bank_frames and len(state.cache) >= len(base.points) \
                and len(state.starts) >= base.starts \
                and torch.equal(state.cache.points[: len(base.points)], base.points.to(state.cache.points.device)):
            return self._save_delta(stage, state, base)
        return self._save_full(stage, state)

    def _save_delta(self, stage: str, state: SceneState, base: Loaded) -> list[str]:
        start, cache = len(base.points), state.cache
        frames = state.bank.frames[base.bank_frames:]
        arrays = {"points": cache.points[start:].cpu().numpy(), "colors": cache.colors[start:].float().cpu().numpy(),
                  "sources": cache.sources[start:].to(torch.int32).cpu().numpy()}
        starts = state.starts[base.starts:]
        keys = [self.key("state", stage, "delta.npz")]
        self.store.put_bytes(self.bucket, keys[0], _npz(**arrays, **_frame_arrays(frames), **_start_arrays(starts, "start_")))
        keys += self._save_embeddings(stage, state, base.embeddings)
        keys.append(self.key("state", stage, "state.json"))
        meta = self._meta(state, frames) | {"base": base.stage, "names": cache.names,
                                            "new_starts": [s.name for s in starts]}
        self.store.put_bytes(self.bucket, keys[-1], json.dumps(meta).encode())
        return keys

    def _save_embeddings(self, stage: str, state: SceneState, saved: frozenset[str]) -> list[str]:
        """The encoder outputs that the snapshots under this one do not hold yet."""
        new = {name: value.float().cpu().numpy() for name, value in state.embeddings.items() if name not in saved}
        if not new:
            return []
        key = self.key("state", stage, "embeddings.npz")
        self.store.put_bytes(self.bucket, key, _npz(**new))
        return [key]

    def _embedding_bytes(self, stage: str) -> bytes | None:
        key = self.key("state", stage, "embeddings.npz")
        return self.store.get_bytes(self.bucket, key) if self.store.exists(self.bucket, key) else None

    def _meta(self, state: SceneState, frames: Sequence[MemoryFrame]) -> dict:
        """The state's small fields, and the source and index of the bank ``frames`` the snapshot holds."""
        return {"kind": state.kind, "scene_spec": state.scene_spec, "voxel_size": state.voxel_size,
                "prompt": state.prompt,
                "starts": [s.name for s in state.starts],
                "plans": [{"name": n, "start": i, "trajectory": trajectory_to_json(t)} for n, i, t in state.plans],
                "choices": state.choices,
                "frames": [{"source": f.source, "index": f.index} for f in frames]}

    def _save_full(self, stage: str, state: SceneState) -> list[str]:
        keys = []
        with tempfile.TemporaryDirectory() as tmp:
            state.cache.save(Path(tmp) / "cache")
            for path in sorted((Path(tmp) / "cache").iterdir()):
                keys.append(self.key("state", stage, "cache", path.name))
                self.store.put_file(self.bucket, keys[-1], path)
        keys.append(self.key("state", stage, "bank.npz"))
        self.store.put_bytes(self.bucket, keys[-1], _npz(**_frame_arrays(state.bank.frames)))
        keys.append(self.key("state", stage, "starts.npz"))
        self.store.put_bytes(self.bucket, keys[-1], _npz(**_start_arrays(state.starts)))
        keys += self._save_embeddings(stage, state, frozenset())
        meta = self._meta(state, state.bank.frames)
        keys.append(self.key("state", stage, "state.json"))
        self.store.put_bytes(self.bucket, keys[-1], json.dumps(meta).encode())
        return keys

    def has(self, stage: str) -> bool:
        """Whether ``stage`` wrote its snapshot."""
        return self.store.exists(self.bucket, self.key("state", stage, "state.json"))

    def plan_names(self, stage: str) -> list[str]:
        """Record names of the planned trajectories, in run order, from a snapshot's small metadata only."""
        return [p["name"] for p in self._read_meta(stage)["plans"]]

    def _read_meta(self, stage: str) -> dict:
        return json.loads(self.store.get_bytes(self.bucket, self.key("state", stage, "state.json")))

    def load(self, stage: str) -> SceneState:
        """The snapshot written by ``save(stage, ...)``: the full snapshot under it with every delta in between
        applied, the plan (a run trajectory keeps the cameras it was generated at) from ``stage`` itself."""
        chain = [(stage, self._read_meta(stage))]
        while "base" in chain[-1][1]:
            base = chain[-1][1]["base"]
            chain.append((base, self._read_meta(base)))
        # the deltas and embeddings are fetched on threads while the base loads, and decoded here: numpy parses
        # .npy headers with ast, whose C converter races between threads before CPython 3.11.8 (gh-106905)
        with ThreadPoolExecutor(READERS, thread_name_prefix="snapshot") as pool:
            deltas = [(meta, pool.submit(self.store.get_bytes, self.bucket, self.key("state", name, "delta.npz")))
                      for name, meta in reversed(chain[:-1])]
            embeddings = [pool.submit(self._embedding_bytes, name) for name, _ in reversed(chain)]
            state = self._load_full(*chain[-1], _plans(chain[0][1]))
            if deltas:
                _apply_deltas(state, [(meta, _arrays(delta.result())) for meta, delta in deltas])
            for data in embeddings:
                if (saved := data.result()) is not None:
                    state.embeddings.update({name: torch.from_numpy(a) for name, a in _arrays(saved).items()})
        state.choices = list(chain[0][1].get("choices", []))
        state.base = Loaded(stage, state.cache.points, len(state.bank), frozenset(state.embeddings), len(state.starts))
        return state

    def _load_full(self, stage: str, meta: dict, plans: list[tuple[str, int, Trajectory]]) -> SceneState:
        prefix = self.key("state", stage, "cache") + "/"
        with tempfile.TemporaryDirectory() as tmp:
            for entry in self.store.list(self.bucket, prefix):
                self.store.get_file(self.bucket, entry.key, Path(tmp) / entry.key[len(prefix):])
            cache = Cache3D.load(Path(tmp))
        bank = self._load_bank(stage, meta)
        arrays = np.load(io.BytesIO(self.store.get_bytes(self.bucket, self.key("state", stage, "starts.npz"))))
        starts = _starts(arrays, meta["starts"])
        return SceneState(self.scene_id, meta["kind"], cache, bank, starts, plans, meta["scene_spec"],
                          meta["voxel_size"], meta.get("prompt"))

    def _load_bank(self, stage: str, meta: dict) -> MemoryBank:
        """The bank of a full snapshot (older ones hold it as a saved :class:`MemoryBank` with 8-bit frames)."""
        data = self.store.get_bytes(self.bucket, self.key("state", stage, "bank.npz"))
        if "frames" not in meta:
            return MemoryBank.from_bytes(data)
        return MemoryBank(_frames(np.load(io.BytesIO(data)), meta["frames"]))
