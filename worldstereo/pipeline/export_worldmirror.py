"""The memory bank in the layout HY-World 2.0's WorldMirror reconstruction reads (the release's ``world_mirror_data``).

``images/<camera_id>.png`` for every bank frame, ``cameras.json`` = ``{"num_cameras", "extrinsics": [{"camera_id",
"matrix": c2w 4x4 (OpenCV)}], "intrinsics": [{"camera_id", "matrix": K 3x3 (pixels of that image)}]}`` and
``name_map.json`` (``<source>/<frame>`` -> 4-digit position in sorted camera-id order). Camera ids are
``<source>-<frame:04d>``: the bank's source tag (``input``, ``panorama``, a trajectory) and the frame's index there.
"""

from __future__ import annotations

import json

import torch

from worldstereo.errors import InvalidInputError
from worldstereo.memory.bank import MemoryBank

FOLDER = "world_mirror"


def camera_ids(bank: MemoryBank) -> list[str]:
    ids = [f"{f.source}-{f.index:04d}" for f in bank.frames]
    if len(set(ids)) != len(ids):
        raise InvalidInputError("memory-bank frames must have distinct (source, frame) pairs")
    return ids


def worldmirror_images(bank: MemoryBank) -> list[str]:
    """Relative path of each bank frame's image (its PNG, ``frame_pngs``), in bank order."""
    return [f"images/{cid}.png" for cid in camera_ids(bank)]


def worldmirror_files(bank: MemoryBank) -> dict[str, bytes]:
    """Relative path -> bytes of the export's ``cameras.json`` and ``name_map.json`` (images: :func:`worldmirror_images`)."""
    ids = camera_ids(bank)
    cameras = {
        "num_cameras": len(ids),
        "extrinsics": [{"camera_id": cid, "matrix": f.camera.c2w[0].double().tolist()} for cid, f in zip(ids, bank.frames)],
        "intrinsics": [{"camera_id": cid, "matrix": f.camera.K[0].double().tolist()} for cid, f in zip(ids, bank.frames)],
    }
    order = {cid: position for position, cid in enumerate(sorted(ids))}
    name_map = {f"{f.source}/{f.index:04d}": f"{order[cid]:04d}" for cid, f in zip(ids, bank.frames)}
    return {"cameras.json": json.dumps(cameras, indent=1).encode(), "name_map.json": json.dumps(name_map, indent=1).encode()}


def read_worldmirror_cameras(data: bytes) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Camera ids, c2w ``[N,4,4]`` and K ``[N,3,3]`` of a ``cameras.json``, intrinsics matched by id."""
    document = json.loads(data)
    ids = [e["camera_id"] for e in document["extrinsics"]]
    intrinsics = {e["camera_id"]: e["matrix"] for e in document["intrinsics"]}
    if document["num_cameras"] != len(ids) or set(intrinsics) != set(ids):
        raise InvalidInputError("cameras.json: num_cameras, extrinsics and intrinsics disagree")
    c2w = torch.tensor([e["matrix"] for e in document["extrinsics"]], dtype=torch.float64)
    return ids, c2w, torch.tensor([intrinsics[i] for i in ids], dtype=torch.float64)
