"""Scene state between stages — the 3D cache, the memory bank, the planned trajectories — and its snapshots.

A snapshot is written after every stage under ``outputs/state/{stage}/`` so that a restarted scene resumes
from the last finished stage with the cache and memory bank exactly as they were.
"""

from __future__ import annotations

import io
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from worldstereo.geometry.camera import Camera
from worldstereo.geometry.trajectory import Trajectory, load_trajectory_json, trajectory_to_json
from worldstereo.memory.bank import MemoryBank
from worldstereo.memory.cache import Cache3D
from worldstereo.storage.base import ObjectStore
from worldstereo.storage.keys import output_key


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


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _camera_arrays(camera: Camera) -> dict[str, np.ndarray]:
    return {"K": camera.K.double().cpu().numpy(), "c2w": camera.c2w.double().cpu().numpy(),
            "size": np.array([camera.height, camera.width])}


def _camera_from(arrays, prefix: str = "") -> Camera:
    size = arrays[f"{prefix}size"]
    return Camera(torch.from_numpy(arrays[f"{prefix}K"]), torch.from_numpy(arrays[f"{prefix}c2w"]),
                  int(size[0]), int(size[1]))


class StateStore:
    """Reads and writes scene state snapshots under one scene's outputs prefix."""

    def __init__(self, store: ObjectStore, bucket: str, scene_id: str) -> None:
        self.store, self.bucket, self.scene_id = store, bucket, scene_id

    def key(self, *parts: str) -> str:
        return output_key(self.scene_id, *parts)

    def save(self, stage: str, state: SceneState) -> list[str]:
        """Snapshot cache, bank, starts and plans; returns the keys written."""
        keys = []
        with tempfile.TemporaryDirectory() as tmp:
            state.cache.save(Path(tmp) / "cache")
            for path in sorted((Path(tmp) / "cache").iterdir()):
                keys.append(self.key("state", stage, "cache", path.name))
                self.store.put_file(self.bucket, keys[-1], path)
        keys.append(self.key("state", stage, "bank.npz"))
        self.store.put_bytes(self.bucket, keys[-1], state.bank.to_bytes())
        starts = {}
        for i, start in enumerate(state.starts):
            starts.update({f"{i}_image": start.image.cpu().numpy(), f"{i}_depth": start.depth.cpu().numpy()})
            starts.update({f"{i}_{k}": v for k, v in _camera_arrays(start.camera).items()})
        keys.append(self.key("state", stage, "starts.npz"))
        self.store.put_bytes(self.bucket, keys[-1], _npz(**starts))
        meta = {
            "kind": state.kind,
            "scene_spec": state.scene_spec,
            "voxel_size": state.voxel_size,
            "prompt": state.prompt,
            "starts": [s.name for s in state.starts],
            "plans": [{"name": n, "start": i, "trajectory": trajectory_to_json(t)} for n, i, t in state.plans],
        }
        if state.embeddings:
            keys.append(self.key("state", stage, "embeddings.npz"))
            arrays = {name: value.float().cpu().numpy() for name, value in state.embeddings.items()}
            self.store.put_bytes(self.bucket, keys[-1], _npz(**arrays))
        keys.append(self.key("state", stage, "state.json"))
        self.store.put_bytes(self.bucket, keys[-1], json.dumps(meta).encode())
        return keys

    def load(self, stage: str) -> SceneState:
        """The snapshot written by ``save(stage, ...)``."""
        meta = json.loads(self.store.get_bytes(self.bucket, self.key("state", stage, "state.json")))
        prefix = self.key("state", stage, "cache") + "/"
        with tempfile.TemporaryDirectory() as tmp:
            for entry in self.store.list(self.bucket, prefix):
                self.store.get_file(self.bucket, entry.key, Path(tmp) / entry.key[len(prefix):])
            cache = Cache3D.load(Path(tmp))
        bank = MemoryBank.from_bytes(self.store.get_bytes(self.bucket, self.key("state", stage, "bank.npz")))
        arrays = np.load(io.BytesIO(self.store.get_bytes(self.bucket, self.key("state", stage, "starts.npz"))))
        starts = [
            Start(name, torch.from_numpy(arrays[f"{i}_image"]), _camera_from(arrays, f"{i}_"),
                  torch.from_numpy(arrays[f"{i}_depth"]))
            for i, name in enumerate(meta["starts"])
        ]
        plans = [(p["name"], p["start"], load_trajectory_json(p["trajectory"])) for p in meta["plans"]]
        embeddings_key = self.key("state", stage, "embeddings.npz")
        embeddings = {}
        if self.store.exists(self.bucket, embeddings_key):
            saved = np.load(io.BytesIO(self.store.get_bytes(self.bucket, embeddings_key)))
            embeddings = {name: torch.from_numpy(saved[name]) for name in saved.files}
        return SceneState(self.scene_id, meta["kind"], cache, bank, starts, plans, meta["scene_spec"],
                          meta["voxel_size"], meta.get("prompt"), embeddings)

