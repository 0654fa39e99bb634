"""Scene exports: fused PLY, cameras JSON (OpenCV w2c + K), nerfstudio ``transforms.json``, a COLMAP text
model, the memory-bank keyframes as PNG (the snapshots' bytes), and a summary JSON."""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import torch
from torch import Tensor

from worldstereo.geometry.camera import Camera
from worldstereo.geometry.ply import ply_bytes as write_ply
from worldstereo.geometry.rotations import rotation_to_quaternion
from worldstereo.memory.bank import MemoryBank, frame_pngs
from worldstereo.pipeline.export_worldmirror import FOLDER, worldmirror_files, worldmirror_images
from worldstereo.pipeline.global_recon import global_cloud
from worldstereo.pipeline.scene import DEPTH_INFO, EXPORT, INIT, TRAJECTORY, ReconstructFn, SceneContext, StageResult
from worldstereo.viewer.outputs import read_outputs, store_reader
from worldstereo.viewer.page import PAGE, scene_page

OPENCV_TO_OPENGL = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))
COLMAP_MAX_POINTS = 500_000
DECIMAL_DIGITS = 18  # decimal64's precision: any coordinate below MAX_COORDINATE at point_decimals fits
MAX_COORDINATE = 1e15  # beyond it a cloud is broken, and fixed-point digits would overflow decimal64
GLOBAL_PLY = "fused_global.ply"  # the global reconstruction's cloud, beside fused.ply
WRITERS = 8  # concurrent puts of the export: a local one waits on its fsync, an S3 one on its round trip
POINTS3D_HEADER = (b"# 3D point list with one line of data per point:\n",
                   b"#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n")


def cameras_json(cameras: Camera, names: list[str]) -> dict:
    """Per-frame OpenCV w2c extrinsics and intrinsics."""
    cams = cameras.to("cpu", torch.float64)
    return {"convention": "opencv", "height": cams.height, "width": cams.width, "names": names,
            "w2c": cams.w2c.tolist(), "intrinsics": cams.K.tolist()}


def nerfstudio_transforms(cameras: Camera, image_paths: list[str], ply_path: str) -> dict:
    """nerfstudio ``transforms.json``: OPENCV model, per-frame intrinsics, OpenGL-convention c2w."""
    cams = cameras.to("cpu", torch.float64)
    c2w_gl = cams.c2w @ OPENCV_TO_OPENGL
    frames = [
        {"file_path": path, "transform_matrix": c2w_gl[i].tolist(), "fl_x": float(cams.K[i, 0, 0]),
         "fl_y": float(cams.K[i, 1, 1]), "cx": float(cams.K[i, 0, 2]), "cy": float(cams.K[i, 1, 2]),
         "w": cams.width, "h": cams.height}
        for i, path in enumerate(image_paths)
    ]
    return {"camera_model": "OPENCV", "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0, "frames": frames,
            "ply_file_path": ply_path}


def colmap_text(cameras: Camera, image_names: list[str], points: Tensor, colors: Tensor) -> dict[str, bytes]:
    """``cameras.txt`` (one PINHOLE camera per image), ``images.txt`` (w2c as quaternion + translation), ``points3D.txt``."""
    cams = cameras.to("cpu", torch.float64)
    w2c = cams.w2c
    quats = rotation_to_quaternion(w2c[:, :3, :3])
    cam_lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    img_lines = ["# Image list with two lines of data per image:",
                 "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME", "#   POINTS2D[] as (X, Y, POINT3D_ID)"]
    for i, name in enumerate(image_names, start=1):
        K = cams.K[i - 1]
        cam_lines.append(f"{i} PINHOLE {cams.width} {cams.height} {K[0, 0]:.10g} {K[1, 1]:.10g} {K[0, 2]:.10g} {K[1, 2]:.10g}")
        q, t = quats[i - 1].tolist(), w2c[i - 1, :3, 3].tolist()
        img_lines.append(f"{i} {' '.join(f'{v:.12g}' for v in q)} {' '.join(f'{v:.12g}' for v in t)} {i} {name}")
        img_lines.append("")
    return {"cameras.txt": ("\n".join(cam_lines) + "\n").encode(), "images.txt": ("\n".join(img_lines) + "\n").encode(),
            "points3D.txt": b"".join([*POINTS3D_HEADER, *_points3d_rows(points, colors)])}


def _points3d_rows(points: Tensor, colors: Tensor, parts: int = 2) -> list[pa.Buffer]:
    """``POINT3D_ID X Y Z R G B ERROR`` lines (empty tracks) in ``parts`` buffers, formatted in bulk by Arrow's CSV writer.

    Coordinates are fixed-point decimals (Arrow ``decimal64`` columns) at :func:`point_decimals`; the ``parts``
    slices of the rows are formatted on concurrent threads.
    """
    xyz = points.detach().to("cpu", torch.float64).numpy()
    decimals = point_decimals(float(np.abs(xyz).max()) if len(xyz) else 0.0)
    scaled = np.rint(xyz.T * 10.0 ** decimals).astype(np.int64, order="C")  # (3, N): one contiguous row per axis
    kind = pa.decimal64(DECIMAL_DIGITS, decimals)
    rgb = (colors.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    table = pa.table({"id": np.arange(1, len(xyz) + 1),
                      **{axis: pa.Array.from_buffers(kind, len(xyz), [None, pa.py_buffer(scaled[i])])
                         for i, axis in enumerate("xyz")},
                      "r": rgb[:, 0], "g": rgb[:, 1], "b": rgb[:, 2], "error": np.zeros(len(xyz), np.uint8)})
    options = pa_csv.WriteOptions(include_header=False, delimiter=" ", quoting_style="none")

    def write(part: pa.Table) -> pa.Buffer:
        sink = pa.BufferOutputStream()
        pa_csv.write_csv(part, sink, options)
        return sink.getvalue()

    size = -(-len(xyz) // parts) or 1
    with ThreadPoolExecutor(parts) as pool:
        return list(pool.map(write, [table.slice(start, size) for start in range(0, len(xyz), size)]))


def point_decimals(largest: float) -> int:
    """Decimals of the COLMAP coordinates: float32's resolution (2^-24 relative) at the largest |coordinate|."""
    if largest >= MAX_COORDINATE:
        raise ValueError(f"cannot write COLMAP points: a coordinate reaches {largest:.3g} (limit {MAX_COORDINATE:.0e})")
    return min(max(0, math.ceil(-math.log10(largest * 2.0 ** -24))), DECIMAL_DIGITS - 1) if largest > 0 else 0


def ply_bytes(points: Tensor, colors: Tensor) -> bytes:
    """Binary PLY of a coloured point cloud: double ``x y z``, uchar ``red green blue`` (Open3D's layout)."""
    xyz = points.detach().cpu().numpy().astype(np.float64, copy=False)
    rgb = colors.detach().cpu().numpy().astype(np.float64)  # a copy, scaled in place (exactly: 8 + 24 bits)
    np.clip(rgb, 0, 1, out=rgb)
    rgb *= 255.0
    rgb += 0.5
    rgb = np.floor(rgb, out=rgb).astype(np.uint8)
    return write_ply({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "red": rgb[:, 0], "green": rgb[:, 1],
                      "blue": rgb[:, 2]}, comment="worldstereo fused cloud")


def _bank_views(bank: MemoryBank) -> tuple[Camera, list[str], list[bytes]]:
    frames = bank.frames
    names = [f"{f.source}_{f.index:03d}.png" for f in frames]
    return Camera.cat([f.camera.to(dtype=torch.float64) for f in frames]), names, frame_pngs(frames)


def run_export(ctx: SceneContext, names: list[str], reconstruct_fn: ReconstructFn | None = None) -> StageResult:
    """Write every export from the last trajectory's snapshot, then the summary and the stage record; with
    ``global_reconstruction`` set, also ``fused_global.ply`` from ``reconstruct_fn`` (:mod:`global_recon`).

    Files are made and written on concurrent threads: the COLMAP model and the PLY (the longest to make) each
    write as soon as they are made; the small files in one batch, the images in one batch per remaining thread.
    """
    started = time.perf_counter()
    state = ctx.states.load(names[-1] if names else INIT)
    cameras, image_names, images = _bank_views(state.bank)
    sample = _subsample(len(state.cache), COLMAP_MAX_POINTS)
    extra, global_info = {}, {}
    if ctx.settings.global_reconstruction and reconstruct_fn is not None:
        cloud = global_cloud(state, reconstruct_fn, ctx.scene_id, far_depth_ratio=ctx.settings.memory.far_depth_ratio,
                             splat_radius=ctx.settings.memory.splat_radius, seed=ctx.settings.seed)
        extra[GLOBAL_PLY] = ply_bytes(cloud.points, cloud.colors)
        global_info = {"fused_points": len(cloud.points), "frames": cloud.frames, "fitted_frames": cloud.fitted_frames,
                       "inlier_share": cloud.inlier_share}

    def put(files: dict[str, bytes]) -> list[str]:
        keys = [ctx.states.key("exports", *path.split("/")) for path in files]
        for key, data in zip(keys, files.values()):
            ctx.store.put_bytes(ctx.bucket, key, data)
        return keys

    def put_images(frames: list[tuple[str, bytes, str]]) -> list[str]:
        """Each bank frame's PNG under ``images/``, and its WorldMirror copy (no second upload)."""
        keys = []
        for name, png, mirrored in frames:
            keys += put({f"images/{name}": png})
            keys.append(ctx.states.key("exports", FOLDER, *mirrored.split("/")))
            ctx.store.copy(ctx.bucket, keys[-2], keys[-1])
        return keys

    def ply() -> dict[str, bytes]:
        return {"fused.ply": ply_bytes(state.cache.points, state.cache.colors)}

    def colmap() -> dict[str, bytes]:
        text = colmap_text(cameras, image_names, state.cache.points[sample], state.cache.colors[sample])
        return {f"colmap/{name}": value for name, value in text.items()}

    with ThreadPoolExecutor(WRITERS, thread_name_prefix="export") as pool:
        writes = [pool.submit(lambda make: put(make()), make) for make in (colmap, ply)]
        files = {f"{FOLDER}/{n}": data for n, data in worldmirror_files(state.bank).items()}
        all_cameras = {name: cameras_json(trajectory.cameras, [f"{name}_{i:03d}" for i in range(len(trajectory))])
                       for name, _, trajectory in state.plans}
        files["cameras.json"] = json.dumps(all_cameras).encode()
        transforms = nerfstudio_transforms(cameras, [f"images/{n}" for n in image_names], "fused.ply")
        files["transforms.json"] = json.dumps(transforms, indent=1).encode()
        files.update(extra)
        writes.append(pool.submit(put, files))
        frames = list(zip(image_names, images, worldmirror_images(state.bank)))
        size = -(-len(frames) // (WRITERS - len(writes)))
        writes += [pool.submit(put_images, frames[start:start + size]) for start in range(0, len(frames), size)]
        keys = [key for write in writes for key in write.result()]
    records = {r.trajectory or r.stage: r for r in ctx.records.records(ctx.scene_id)}
    low, high = torch.aminmax(state.cache.points, dim=0)
    summary = {
        "scene_id": ctx.scene_id,
        "kind": state.kind,
        "fused_points": len(state.cache),
        **({"global": global_info} if global_info else {}),
        "extent": float((high - low).norm()),
        "voxel_size": state.voxel_size,
        "up": world_up(state).tolist(),
        "bank_frames": len(state.bank),
        "trajectories": {name: {"duration_s": records[name].duration_s, **records[name].metrics}
                         for name in names if name in records},
        "init": {"duration_s": records[INIT].duration_s, **records[INIT].metrics, "depth": _depth_info(ctx)}
        if INIT in records else {},
        "duration_s": sum(r.duration_s for r in records.values() if r.stage in (INIT, TRAJECTORY)),
        "outputs": sorted(keys),
    }
    keys.append(ctx.states.key("summary.json"))
    ctx.store.put_bytes(ctx.bucket, keys[-1], json.dumps(summary, indent=2).encode())
    keys.append(ctx.states.key("exports", PAGE))  # the viewer of everything above, as one page
    exports = read_outputs(*store_reader(ctx.store, ctx.bucket, ctx.states.key("exports") + "/"))
    ctx.store.put_bytes(ctx.bucket, keys[-1], scene_page(exports))
    result = StageResult(tuple(keys), {"fused_points": float(len(state.cache))})
    ctx.finish(EXPORT, None, started, result)
    return result


def _depth_info(ctx: SceneContext) -> dict:
    """Where the init depth and intrinsics came from (``{}`` for scenes initialised before this was recorded)."""
    key = ctx.states.key(INIT, DEPTH_INFO)
    return json.loads(ctx.store.get_bytes(ctx.bucket, key)) if ctx.store.exists(ctx.bucket, key) else {}


def world_up(state) -> Tensor:
    """Panoramas live in a z-up world; a perspective scene's up is its input camera's -y axis."""
    if state.kind == "panorama":
        return torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    return -state.starts[0].camera.c2w[0, :3, 1].double()


def _subsample(count: int, limit: int) -> Tensor:
    if count <= limit:
        return torch.arange(count)
    return torch.from_numpy(np.linspace(0, count - 1, limit).round().astype(np.int64))
