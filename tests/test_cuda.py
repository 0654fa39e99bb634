"""The pipeline on CUDA builds the scene that it builds on the CPU (run where a GPU is present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from worldstereo.config import PanoramaSettings, Settings, StorageSettings, TrajectorySettings
from worldstereo.geometry.ply import read_ply
from worldstereo.pipeline.local import process_scene, read_local_input
from worldstereo.storage.factory import open_store
from worldstereo.storage.keys import output_key
from worldstereo.synthetic.samples import write_samples

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def fused_cells(root: Path, sample: Path, device: str) -> tuple[dict, set[tuple[int, int, int]]]:
    """Summary of one oracle run on ``device`` and the voxel cells its fused cloud occupies."""
    settings = Settings(storage=StorageSettings(backend="local", root=root / device), device=device,
                        generator="oracle", trajectory=TrajectorySettings(planner="presets", num_frames=9),
                        resolution_scale=0.25,
                        panorama=PanoramaSettings(start_views=2))
    store = open_store(settings.storage)
    summary = process_scene(store, sample.stem, read_local_input(sample, settings), settings)
    ply = read_ply(store.get_bytes(settings.storage.work_bucket, output_key(sample.stem, "exports", "fused.ply")))
    points = np.stack([ply["x"], ply["y"], ply["z"]], 1)
    cells = np.floor(points / summary["voxel_size"]).astype(np.int64)
    return summary, set(map(tuple, cells.tolist()))


def outputs(summary: dict) -> list[str]:
    return [key.split("/", 1)[1] for key in summary["outputs"]]


@pytest.mark.parametrize("name", ["room", "panorama"])
def test_a_scene_on_cuda_matches_the_cpu(tmp_path: Path, name: str) -> None:
    sample = next(p for p in write_samples(tmp_path / "inputs") if p.stem == name)
    cpu, cpu_cells = fused_cells(tmp_path, sample, "cpu")
    gpu, gpu_cells = fused_cells(tmp_path, sample, "cuda")
    assert list(gpu["trajectories"]) == list(cpu["trajectories"])
    assert outputs(gpu) == outputs(cpu)
    assert abs(len(gpu_cells) - len(cpu_cells)) <= 0.01 * len(cpu_cells)
    shared = len(gpu_cells & cpu_cells) / len(cpu_cells | gpu_cells)
    assert shared >= 0.98, f"{shared:.4f} of the voxels are shared"
