"""The splat stage: the torch rasterizer against closed forms, the 3DGS PLY, training on the synthetic room,
the mesh, and the readable failures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import open3d as o3d
import plyfile
import pytest
import torch
from torch import nn

from worldstereo.config import StorageSettings, load_settings
from worldstereo.errors import ConfigurationError, PermanentError
from worldstereo.geometry.camera import Camera
from worldstereo.memory.bank import MemoryBank
from worldstereo.memory.cache import Cache3D
from worldstereo.pipeline.local import process_scene, read_local_input
from worldstereo.pipeline.scene import INIT, SPLAT, SceneContext
from worldstereo.pipeline.splat_stage import check_cloud, run_splat
from worldstereo.splat.gaussians import SH_C0, from_cloud
from worldstereo.splat.ply import read_splats_ply, splats_ply
from worldstereo.splat.rasterize import render
from worldstereo.splat.raster_torch import BLUR
from worldstereo.storage.factory import open_store
from worldstereo.storage.keys import output_key
from worldstereo.synthetic.samples import write_samples


def _gaussians(means, colors, scale: float, opacity: float) -> nn.ParameterDict:
    count = len(means)
    quats = torch.zeros(count, 4)
    quats[:, 0] = 1
    logit = math.log(opacity / (1 - opacity))
    return nn.ParameterDict({"means": nn.Parameter(torch.tensor(means)), "scales": nn.Parameter(torch.full((count, 3), math.log(scale))),
                             "quats": nn.Parameter(quats), "opacities": nn.Parameter(torch.full((count,), logit)),
                             "sh0": nn.Parameter((torch.tensor(colors) - 0.5)[:, None] / SH_C0),
                             "shN": nn.Parameter(torch.zeros(count, 0, 3))})


def _camera(height: int = 32, width: int = 48, focal: float = 40.0) -> Camera:
    K = Camera.intrinsics(focal, focal, width / 2, height / 2)[None]
    return Camera(K, torch.eye(4, dtype=torch.float64)[None], height, width)


def test_one_gaussian_renders_its_projected_profile() -> None:
    """A Gaussian of world std s at depth z is a 2D Gaussian of variance (f s / z)^2 + blur (3DGS Eq. 4-5)."""
    params = _gaussians([[0.0, 0.0, 2.0]], [[1.0, 0.5, 0.25]], scale=0.05, opacity=0.8)
    out = render(params, _camera(), sh_degree=0, backend="torch")
    variance = (40 * 0.05 / 2) ** 2 + BLUR
    xs = torch.arange(48) + 0.5 - 24
    expected = 0.8 * torch.exp(-0.5 * xs**2 / variance)
    expected = torch.where(expected >= 1 / 255, expected, 0)
    row = out.alpha[15]  # pixel centre y = 15.5: 0.5 px above the Gaussian's centre
    torch.testing.assert_close(row, expected * math.exp(-0.5 * 0.25 / variance), atol=2e-3, rtol=0)
    torch.testing.assert_close(out.rgb[16, 24], torch.tensor([1.0, 0.5, 0.25]) * out.alpha[16, 24], atol=1e-5, rtol=0)
    assert abs(float(out.depth[16, 24].detach()) - 2.0) < 1e-5


def test_nearer_gaussian_occludes_farther_one_front_to_back() -> None:
    """C = a1 c1 + (1 - a1) a2 c2 (3DGS Eq. 3), whatever order the Gaussians are stored in."""
    params = _gaussians([[0.0, 0.0, 3.0], [0.0, 0.0, 1.5]], [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], scale=0.2, opacity=0.6)
    out = render(params, _camera(), sh_degree=0, backend="torch")
    a1, a2 = (0.6 * math.exp(-0.5 * 0.5 / ((40 * 0.2 / z) ** 2 + BLUR)) for z in (1.5, 3.0))  # 0.5 px off in x and y
    rgb = out.rgb[16, 24].detach()
    torch.testing.assert_close(rgb, torch.tensor([a1, 0.0, (1 - a1) * a2]), atol=1e-5, rtol=0)
    assert abs(float(out.alpha[16, 24]) - (a1 + (1 - a1) * a2)) < 1e-5
    assert abs(float(out.depth[16, 24]) - (a1 * 1.5 + (1 - a1) * a2 * 3.0) / (a1 + (1 - a1) * a2)) < 1e-4


def test_gradients_reach_every_parameter_and_the_2d_means() -> None:
    params = from_cloud(torch.randn(64, 3) * 0.2 + torch.tensor([0.0, 0.0, 2.0]), torch.rand(64, 3), sh_degree=1)
    with torch.no_grad():  # anisotropic and rotated: an isotropic Gaussian has no rotation gradient
        params["scales"].add_(torch.randn(64, 3) * 0.3)
        params["quats"].normal_()
    out = render(params, _camera(), sh_degree=1, backend="torch")
    out.info["means2d"].retain_grad()
    (out.rgb.mean() + out.depth.mean()).backward()
    assert out.info["means2d"].grad.abs().sum() > 0
    for key in ("means", "scales", "quats", "opacities", "sh0", "shN"):
        assert params[key].grad is not None and params[key].grad.abs().sum() > 0, key


def test_splats_ply_has_the_3dgs_layout_and_reads_back() -> None:
    params = from_cloud(torch.randn(50, 3), torch.rand(50, 3), sh_degree=2)
    with torch.no_grad():
        params["shN"].normal_()
    data = splats_ply(params)
    ply = plyfile.PlyData.read(__import__("io").BytesIO(data))
    names = [p.name for p in ply["vertex"].properties]
    assert names == (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(24)]
                     + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    assert ply["vertex"].count == 50
    # f_rest is channel-major: the first 8 are red's coefficients
    np.testing.assert_allclose(ply["vertex"]["f_rest_1"], params["shN"][:, 1, 0].detach().numpy(), rtol=1e-6)
    back = read_splats_ply(data)
    for key in ("means", "scales", "opacities", "sh0", "shN"):
        torch.testing.assert_close(back[key], params[key].detach())


def test_degenerate_and_empty_clouds_fail_with_a_reason() -> None:
    for points in (torch.ones(100, 3), torch.rand(5, 3)):  # one voxel, a few points
        with pytest.raises(PermanentError, match="empty or degenerate"):
            check_cloud(Cache3D.from_points(points, torch.rand(len(points), 3), 0.01))
    check_cloud(Cache3D.from_points(torch.rand(100, 3), torch.rand(100, 3), 0.01))


@pytest.fixture(scope="module")
def room(tmp_path_factory) -> tuple:
    """The synthetic room through the whole pipeline at a small size (oracle generator)."""
    tmp = tmp_path_factory.mktemp("splat")
    image = next(p for p in write_samples(tmp / "in") if p.stem == "room")
    settings = load_settings(resolution_scale=0.25, trajectory={"num_frames": 9}, storage=StorageSettings(root=tmp / "store"),
                             splat={"iterations": 40, "held_out_stride": 4})
    store = open_store(settings.storage)
    process_scene(store, "room", read_local_input(image, settings), settings)
    return store, settings, SceneContext(store, settings.storage.work_bucket, "room", settings)


@pytest.mark.slow
def test_the_splat_stage_writes_splats_mesh_and_scores(room, tmp_path: Path) -> None:
    store, settings, ctx = room
    record = next(r for r in ctx.records.records("room") if r.stage == SPLAT)
    metrics = record.metrics
    data = store.get_bytes(ctx.bucket, output_key("room", "exports", "splats.ply"))
    assert plyfile.PlyData.read(__import__("io").BytesIO(data))["vertex"].count == metrics["gaussians"]
    assert metrics["held_out_views"] >= 2
    assert metrics["splat_psnr"] > metrics["cloud_psnr"]  # the splats fill the cloud's holes at unseen cameras
    mesh_bytes = store.get_bytes(ctx.bucket, output_key("room", "exports", "mesh.ply"))
    assert len(mesh_bytes) < 20 * 2**20
    path = tmp_path / "mesh.ply"
    path.write_bytes(mesh_bytes)
    mesh = o3d.io.read_triangle_mesh(str(path))
    assert len(mesh.triangles) == metrics["mesh_triangles"] > 100
    assert mesh.has_vertex_colors()
    assert json.loads(store.get_bytes(ctx.bucket, output_key("room", "exports", "splat.json")))["gaussians"] == metrics["gaussians"]


@pytest.mark.slow
def test_too_few_frames_fail_the_stage_and_keep_earlier_outputs(room) -> None:
    store, settings, ctx = room
    strict = ctx.settings.model_copy(update={"splat": ctx.settings.splat.model_copy(update={"min_frames": 10_000})})
    strict_ctx = SceneContext(store, ctx.bucket, "room", strict)
    names = [name for name, _, _ in ctx.states.load(INIT).plans]
    before = sorted(e.key for e in store.list(ctx.bucket, "scenes/room/"))
    with pytest.raises(PermanentError, match="training frames, at least 10000"):
        run_splat(strict_ctx, names)
    assert sorted(e.key for e in store.list(ctx.bucket, "scenes/room/")) == before


def _screenshot(url: str, path: Path) -> np.ndarray:
    """A headless chromium screenshot of ``url`` (software WebGL), as an ``[H,W,3]`` array."""
    import subprocess

    from PIL import Image

    subprocess.run(["chromium", "--headless=new", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                    "--hide-scrollbars", "--window-size=960,640", "--virtual-time-budget=60000",
                    f"--screenshot={path}", url], check=True, capture_output=True, timeout=180)
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.slow
def test_the_viewer_shows_the_scene_and_the_trajectory_frustums(room, tmp_path: Path) -> None:
    from worldstereo.viewer.outputs import read_outputs, store_reader
    from worldstereo.viewer.server import serve

    store, settings, ctx = room
    outputs = read_outputs(*store_reader(store, ctx.bucket, output_key("room", "exports") + "/"))
    assert outputs.splats is not None and outputs.mesh is not None and outputs.input_image is not None
    assert [t.name for t in outputs.trajectories] == [name for name, _, _ in ctx.states.load(INIT).plans]
    assert all(t.keyframes for t in outputs.trajectories)
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = serve(outputs, port=port)
    try:
        pixels = _screenshot(f"http://127.0.0.1:{server.get_port()}/", tmp_path / "view.png")
    finally:
        server.stop()
    _assert_scene_and_frustums(pixels, len(outputs.trajectories))


def _assert_scene_and_frustums(pixels: np.ndarray, trajectories: int) -> None:
    """The canvas (left of the control panel) is not blank and shows at least two trajectories' colours."""
    from worldstereo.viewer.server import PALETTE

    canvas = pixels[:, : pixels.shape[1] * 2 // 3].reshape(-1, 3).astype(int)
    distinct = len(np.unique(canvas // 16, axis=0))
    assert distinct > 50, "the canvas is blank"
    assert sum(_near_blend(canvas, PALETTE[i]) > 20 for i in range(trajectories)) >= 2  # frustums in their colours


def _near_blend(canvas: np.ndarray, color: tuple[int, int, int], white_share: float = 0.3) -> int:
    """Pixels within 40 (L1) of ``color`` blended with up to ``white_share`` of the white page (thin lines)."""
    c, d = np.array(color), 255 - np.array(color)
    share = ((canvas - c) @ d / (d @ d)).clip(0, white_share)
    return int((np.abs(canvas - (c + share[:, None] * d)).sum(1) < 40).sum())


@pytest.mark.slow
def test_the_exported_viewer_page_opens_from_a_file_with_no_server(room, tmp_path: Path) -> None:
    store, settings, ctx = room
    page = tmp_path / "viewer.html"
    page.write_bytes(store.get_bytes(ctx.bucket, output_key("room", "exports", "viewer.html")))
    assert page.stat().st_size < 50 * 2**20
    pixels = _screenshot(page.as_uri(), tmp_path / "page.png")
    _assert_scene_and_frustums(pixels, len(ctx.states.load(INIT).plans))


@pytest.mark.slow
def test_gsplat_unable_to_run_fails_the_stage_and_keeps_earlier_outputs(room) -> None:
    store, settings, ctx = room
    # gsplat's kernels on CPU tensors: they do not exist here (no CUDA), nor run on a GPU node
    forced = ctx.settings.model_copy(update={"device": "cpu",
                                             "splat": ctx.settings.splat.model_copy(update={"backend": "gsplat"})})
    names = [name for name, _, _ in ctx.states.load(INIT).plans]
    before = sorted(e.key for e in store.list(ctx.bucket, "scenes/room/"))
    with pytest.raises(ConfigurationError, match="gsplat cannot rasterize on this node"):
        run_splat(SceneContext(store, ctx.bucket, "room", forced), names)
    assert sorted(e.key for e in store.list(ctx.bucket, "scenes/room/")) == before
