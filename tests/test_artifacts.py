"""The Prefect UI's scene preview: its top-down view and the markdown the export stage builds."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import open3d as o3d
import torch
from PIL import Image

from tasks.artifacts import _fused_cloud, scene_markdown
from worldstereo.config import Settings, StorageSettings, TrajectorySettings
from worldstereo.pipeline.exports import ply_bytes
from worldstereo.pipeline.local import process_scene, read_input
from worldstereo.pipeline.preview import top_down_view
from worldstereo.storage.factory import open_store
from worldstereo.storage.keys import output_key
from worldstereo.synthetic.samples import write_samples


def test_each_pixel_of_the_top_down_view_shows_its_highest_point() -> None:
    grid = torch.stack(torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij"), dim=-1).reshape(-1, 2)
    layers = [torch.cat([grid, torch.full((64, 1), z)], dim=1) for z in (2.0, 5.0, 1.0)]  # the middle layer is highest
    colors = [torch.tensor(rgb).expand(64, 3) for rgb in ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))]

    image = top_down_view(torch.cat(layers), torch.cat(colors), torch.tensor([0.0, 0.0, 1.0]), size=8)

    assert torch.equal(image.reshape(-1, 3), torch.tensor([0.0, 1.0, 0.0]).expand(64, 3))


def test_top_down_view_frames_the_central_98_percent_of_the_cloud() -> None:
    points = torch.cat([torch.rand(9_950, 3, dtype=torch.float64), torch.full((50, 3), 50.0, dtype=torch.float64)])

    image = top_down_view(points, torch.ones(len(points), 3), torch.tensor([0.0, 0.0, 1.0]), size=32)

    lit = image.sum(dim=-1) > 0
    assert lit.float().mean() > 0.9  # the far outliers do not shrink the unit square to a corner


def test_scene_markdown_tables_the_trajectories_and_shows_a_keyframe_and_the_fused_cloud(tmp_path: Path) -> None:
    settings = Settings(storage=StorageSettings(backend="local", root=tmp_path / "store"), resolution_scale=0.25,
                        trajectory=TrajectorySettings(planner="presets", num_frames=3, order=["orbit", "up"]))
    image = next(p for p in write_samples(tmp_path / "samples") if p.stem == "room")
    store = open_store(settings.storage)
    for file in image.parent.glob("room.*"):
        store.put_bytes(settings.storage.input_bucket, file.name, file.read_bytes())
    summary = process_scene(store, "room", read_input(store, settings.storage.input_bucket, image.name, settings),
                            settings)

    markdown = scene_markdown(settings, "room")

    lines = markdown.splitlines()
    assert lines[0] == "# room" and f"{summary['fused_points']} fused points" in lines[2]
    assert [line.split(" | ")[0] for line in lines if line.startswith("| orbit") or line.startswith("| up")] == \
        ["| orbit", "| up"]
    images = [line.split("](")[1].rstrip(")") for line in lines if line.startswith("![")]
    assert [uri.split(";")[0] for uri in images] == ["data:image/png", "data:image/jpeg", "data:image/png"]
    assert Image.open(io.BytesIO(base64.b64decode(images[1].split(",", 1)[1]))).size == (256, 256)
    splats = store.get_bytes(settings.storage.work_bucket, output_key("room", "exports", "splat_render.png"))
    assert base64.b64decode(images[2].split(",", 1)[1]) == splats  # the splats' render


def test_the_preview_reads_the_fused_cloud_as_open3d_does(tmp_path: Path) -> None:
    points = torch.randn(100, 3, dtype=torch.float64)
    (tmp_path / "fused.ply").write_bytes(ply_bytes(points, torch.rand(100, 3)))
    cloud = o3d.io.read_point_cloud(str(tmp_path / "fused.ply"))

    read_points, read_colors = _fused_cloud((tmp_path / "fused.ply").read_bytes())

    assert torch.equal(read_points, torch.from_numpy(np.asarray(cloud.points)))
    assert torch.allclose(read_colors.double(), torch.from_numpy(np.asarray(cloud.colors)), atol=1e-7)

