"""A scene's exports as arrays for the viewer, read from a directory or from the store (no pipeline code)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open3d as o3d
import torch

from worldstereo.geometry.ply import read_ply
from worldstereo.png import decode_png
from worldstereo.splat.gaussians import SH_C0
from worldstereo.splat.ply import read_splats_ply
from worldstereo.splat.raster_torch import quat_scale_to_covariance

Reader = Callable[[str], bytes | None]  # a file of the exports folder by relative path, None if absent


@dataclass(frozen=True)
class Splats:
    """What viser draws: ``centers [N,3]``, ``covariances [N,3,3]``, ``rgbs [N,3]`` and ``opacities [N,1]``."""

    centers: np.ndarray
    covariances: np.ndarray
    rgbs: np.ndarray
    opacities: np.ndarray


@dataclass(frozen=True)
class Trajectory:
    """One trajectory's cameras (``c2w [F,4,4]`` OpenCV, ``K [F,3,3]``) and its keyframes' images by frame."""

    name: str
    c2w: np.ndarray
    K: np.ndarray
    height: int
    width: int
    keyframes: dict[int, np.ndarray]


@dataclass(frozen=True)
class SceneOutputs:
    """Everything the viewer shows of one scene."""

    splats: Splats | None
    points: np.ndarray
    colors: np.ndarray  # uint8
    mesh: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # vertices, faces, uint8 vertex colours
    trajectories: list[Trajectory]
    input_image: np.ndarray | None
    up: np.ndarray


def splats_for_viser(data: bytes) -> Splats:
    """The 3DGS PLY as centres, covariances R S S^T R^T, DC colours and opacities."""
    params = read_splats_ply(data)
    covariances = quat_scale_to_covariance(params["quats"], params["scales"].exp())
    rgbs = (params["sh0"][:, 0] * SH_C0 + 0.5).clamp(0, 1)
    return Splats(params["means"].numpy(), covariances.numpy(), rgbs.numpy(),
                  torch.sigmoid(params["opacities"])[:, None].numpy())


def _mesh(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mesh.ply"
        path.write_bytes(data)
        mesh = o3d.io.read_triangle_mesh(str(path))
    if len(mesh.triangles) == 0:
        return None
    colors = (np.asarray(mesh.vertex_colors) * 255).round().astype(np.uint8) if mesh.has_vertex_colors() else None
    return np.asarray(mesh.vertices, np.float32), np.asarray(mesh.triangles, np.int32), colors


def read_outputs(read: Reader, image_names: list[str]) -> SceneOutputs:
    """The viewer's arrays from an exports folder (``image_names``: the files under ``images/``)."""
    cloud = read_ply(read("fused.ply"))
    points = np.stack([cloud["x"], cloud["y"], cloud["z"]], 1).astype(np.float32)
    colors = np.stack([cloud["red"], cloud["green"], cloud["blue"]], 1)
    splats_data, mesh_data, summary = read("splats.ply"), read("mesh.ply"), read("../summary.json")
    cameras = json.loads(read("cameras.json"))
    images = {name.rsplit(".", 1)[0]: name for name in image_names}
    trajectories = []
    for name, cams in cameras.items():
        keys = {int(stem.rsplit("_", 1)[1]): file for stem, file in images.items() if stem.rsplit("_", 1)[0] == name}
        keyframes = {index: decode_png(read(f"images/{file}")).numpy() for index, file in sorted(keys.items())}
        w2c = np.asarray(cams["w2c"], np.float64)
        trajectories.append(Trajectory(name, np.linalg.inv(w2c), np.asarray(cams["intrinsics"]), cams["height"],
                                       cams["width"], keyframes))
    first = next((images[s] for s in ("input_000", "panorama_000") if s in images), None)
    return SceneOutputs(splats_for_viser(splats_data) if splats_data else None, points, colors,
                        _mesh(mesh_data) if mesh_data else None, trajectories,
                        decode_png(read(f"images/{first}")).numpy() if first else None,
                        np.asarray(json.loads(summary)["up"] if summary else (0.0, -1.0, 0.0)))


def directory_reader(exports: Path) -> tuple[Reader, list[str]]:
    """A local exports folder (``.../outputs/exports``) and its image names."""
    def read(name: str) -> bytes | None:
        path = exports / name
        return path.read_bytes() if path.is_file() else None

    return read, sorted(p.name for p in (exports / "images").glob("*.png"))


def store_reader(store, bucket: str, prefix: str) -> tuple[Reader, list[str]]:
    """A scene's exports in an object store under ``prefix`` (``scenes/ID/outputs/exports/``)."""
    def read(name: str) -> bytes | None:
        parent = prefix.rstrip("/").rsplit("/", 1)[0] + "/"
        key = parent + name[3:] if name.startswith("../") else prefix + name
        return store.get_bytes(bucket, key) if store.exists(bucket, key) else None

    names = sorted(e.key.rsplit("/", 1)[1] for e in store.list(bucket, prefix + "images/") if e.key.endswith(".png"))
    return read, names
