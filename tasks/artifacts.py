"""Prefect UI artifacts: the batch table, a progress bar, and per-scene previews (a keyframe and a top-down view)."""

from __future__ import annotations

import base64
import json
import threading
import time

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
    """The scene's markdown artifact, in the task run that ran it (each batch keeps its own)."""
    create_markdown_artifact(markdown, description=f"WorldStereo scene {scene_id}")


def _fused_cloud(data: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """Points and colours in [0, 1] of an export's fused PLY (double ``x y z``, uchar ``red green blue``)."""
    columns = read_ply(data)
    points = np.stack([columns["x"], columns["y"], columns["z"]], axis=1)
    colors = np.stack([columns["red"], columns["green"], columns["blue"]], axis=1)
    return torch.from_numpy(points), torch.from_numpy(colors).float() / 255


def publish_shard_table(rows: list[dict], index: int, count: int) -> None:
    """A shard's table, in the shard's run: scene, status, duration, error, outputs."""
    create_table_artifact(rows, description=f"scene-batch shard {index} of {count}")


def publish_batch_summary(counts: dict[str, int | float], errors: list[str], flow_run_name: str | None = None) -> None:
    """The batch's totals (and what stopped a shard, if anything) as the keyed ``scene-batch`` artifact."""
    lines = [f"# scene-batch {flow_run_name or ''}".rstrip(), "", "| scenes | done | failed | shards | seconds |",
             "| --- | --- | --- | --- | --- |",
             f"| {counts['scenes']} | {counts['done']} | {counts['failed']} | {counts['shards']} | {counts['seconds']} |"]
    if errors:
        lines += ["", "Shards that could not finish (their scenes stay resumable):", ""] + [f"- {e}" for e in errors]
    lines += ["", "Each shard's run holds its scenes' table; `worldstereo catalog --status failed` lists every reason."]
    create_markdown_artifact("\n".join(lines), key="scene-batch", description="scene-batch totals")


class BatchProgress:
    """A progress artifact that moves as scenes finish (updated at most every ``interval_s``, and at the end)."""

    def __init__(self, total: int, interval_s: float = 5.0) -> None:
        self.total, self.finished, self.interval_s = max(total, 1), 0, interval_s
        self._at = time.monotonic()
        self._lock = threading.Lock()
        self.artifact_id = create_progress_artifact(0.0, key="scene-batch-progress",
                                                    description=f"scenes finished of {total}")

    def advance(self) -> None:
        with self._lock:
            self.finished += 1
            percent = 100.0 * self.finished / self.total
            if percent < 100.0 and time.monotonic() - self._at < self.interval_s:
                return
            self._at = time.monotonic()
        update_progress_artifact(self.artifact_id, percent)