"""Prefect UI artifacts: the batch table, a progress bar, and per-scene previews (a keyframe and a top-down view)."""

from __future__ import annotations

import base64
import json

import numpy as np
import torch
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact
from prefect.artifacts import update_progress_artifact

from worldstereo.config import Settings
from worldstereo.geometry.ply import read_ply
from worldstereo.pipeline.media import encode_jpeg
from worldstereo.pipeline.preview import top_down_view
from worldstereo.storage.factory import open_store
from worldstereo.storage.keys import output_key


def _artifact_key(text: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return "".join(c if c.isalnum() else "-" for c in text.lower())


def _data_uri(image: bytes) -> str:
    kind = "png" if image.startswith(b"\x89PNG") else "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(image).decode()


def scene_markdown(settings: Settings, scene_id: str) -> str:
    """The scene's summary, its last generated keyframe and a top-down view of its fused cloud, as markdown.

    Built where the export stage runs (it reads the fused cloud); the flow receives only the text.
    """
    store, bucket = open_store(settings.storage), settings.storage.work_bucket
    summary = json.loads(store.get_bytes(bucket, output_key(scene_id, "summary.json")))
    keyframes = sorted(k for k in summary["outputs"] if "/exports/images/" in k)
    preview = store.get_bytes(bucket, keyframes[-1]) if keyframes else None
    points, colors = _fused_cloud(store.get_bytes(bucket, output_key(scene_id, "exports", "fused.ply")))
    top = encode_jpeg(top_down_view(points, colors, torch.tensor(summary["up"], dtype=torch.float64)))
    lines = [f"# {scene_id}", "", f"{summary['fused_points']} fused points, {summary['bank_frames']} memory-bank frames, "
             f"{summary['duration_s']:.1f} s", "", "| trajectory | s | hole ratio | reference score | points added |",
             "| --- | --- | --- | --- | --- |"]
    for name, t in summary["trajectories"].items():
        lines.append(f"| {name} | {t['duration_s']:.1f} | {t['hole_ratio']:.3f} | {t['reference_score']:.3f} "
                     f"| {int(t['points_added'])} |")
    if preview:
        lines += ["", f"![keyframe]({_data_uri(preview)})"]
    lines += ["", f"![top-down view of the fused cloud]({_data_uri(top)})"]
    render = output_key(scene_id, "exports", "splat_render.png")
    if store.exists(bucket, render):
        lines += ["", f"![the Gaussian splats at the input camera]({_data_uri(store.get_bytes(bucket, render))})"]
    return "\n".join(lines)


def publish_scene_artifact(scene_id: str, markdown: str) -> None:
    """The scene's markdown artifact in the Prefect UI."""
    create_markdown_artifact(markdown, key=_artifact_key(f"scene-{scene_id}"), description=f"WorldStereo scene {scene_id}")


def _fused_cloud(data: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """Points and colours in [0, 1] of an export's fused PLY (double ``x y z``, uchar ``red green blue``)."""
    columns = read_ply(data)
    points = np.stack([columns["x"], columns["y"], columns["z"]], axis=1)
    colors = np.stack([columns["red"], columns["green"], columns["blue"]], axis=1)
    return torch.from_numpy(points), torch.from_numpy(colors).float() / 255


def publish_batch_table(rows: list[dict], flow_run_name: str | None = None) -> None:
    """The batch's table: scene, status, duration, error, outputs."""
    create_table_artifact(rows, key="scene-batch", description=f"scene-batch {flow_run_name or ''}".strip())


class BatchProgress:
    """A progress artifact updated as scenes finish."""

    def __init__(self, total: int) -> None:
        self.total, self.done = max(total, 1), 0
        self.artifact_id = create_progress_artifact(0.0, key="scene-batch-progress", description="scenes finished")

    def advance(self) -> None:
        self.done += 1
        update_progress_artifact(self.artifact_id, 100.0 * self.done / self.total)
