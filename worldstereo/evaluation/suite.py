"""The evaluation suite behind ``worldstereo eval``: run scenes through the pipeline, score them like the paper.

Per scene (Tables 2, 3, 5):

- ``f1`` / ``auc``: fused cloud against the ground-truth cloud at ``tau = 1%`` of the ground truth's
  extent (AUC over ``[0, 5 tau]``); ``f1_global`` / ``auc_global`` the same for the global reconstruction's
  ``fused_global.ply`` (``global_reconstruction`` on; NaN otherwise). Synthetic inputs carry their true camera, so outputs are already in
  the ground-truth frame; dataset scenes are aligned first (first camera, then ICP with scaling).
- ``rot_err`` (degrees, summed over frames), ``trans_err``, ``ate``: cameras recovered by the
  reconstructor against the requested trajectory, averaged over trajectories.
- ``splat_psnr`` / ``splat_ssim`` and ``cloud_psnr`` / ``cloud_ssim``: the trained splats and the fused cloud
  (point render) at the held-out memory-bank frames (every ``splat.held_out_stride``-th, left out of training).
- ``psnr`` / ``ssim``: generated keyframes (kept losslessly in the memory bank) against the ground-truth
  renders of the same cameras; synthetic scenes only. PSNR is capped at ``PSNR_CAP`` dB (identical images).

Dataset layout (``--suite DIR``)::

    DIR/SCENE/image.png            the input (with image.depth.npy / image.camera.json sidecars as usual)
    DIR/SCENE/gt.ply               the ground-truth point cloud, in the camera file's world frame
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open3d as o3d
import torch

from worldstereo.config import Settings, StorageSettings
from worldstereo.evaluation.camera_metrics import ate, rot_err_rad, trans_err
from worldstereo.evaluation.eval_alignment import first_camera_icp_alignment
from worldstereo.evaluation.coverage import CoverageStep, coverage_curve
from worldstereo.evaluation.ground_truth import reachable_surface, visible_surface
from worldstereo.evaluation.image_metrics import psnr, ssim
from worldstereo.evaluation.pointcloud_metrics import point_cloud_scores, tau_from_extent
from worldstereo.geometry.trajectory import load_trajectory_json
from worldstereo.pipeline.exports import GLOBAL_PLY
from worldstereo.pipeline.local import process_scene, read_local_input
from worldstereo.pipeline.scene import INIT, SPLAT, TRAJECTORY, SceneContext, trajectory_names
from worldstereo.storage.factory import open_store
from worldstereo.storage.keys import output_key
from worldstereo.synthetic import make_scene
from worldstereo.synthetic.samples import write_samples

PSNR_CAP = 100.0
METRICS = ("f1", "auc", "f1_global", "auc_global", "rot_err", "trans_err", "ate", "psnr", "ssim", "splat_psnr",
           "splat_ssim", "cloud_psnr", "cloud_ssim")
SPLAT_METRICS = METRICS[-4:]


@dataclass(frozen=True)
class SceneScores:
    """One row of the evaluation table; NaN where a metric does not apply."""

    scene: str
    f1: float
    auc: float
    f1_global: float
    auc_global: float
    rot_err: float
    trans_err: float
    ate: float
    psnr: float
    ssim: float
    splat_psnr: float = math.nan
    splat_ssim: float = math.nan
    cloud_psnr: float = math.nan
    cloud_ssim: float = math.nan
    coverage: tuple[CoverageStep, ...] = ()  # synthetic scenes with coverage asked for: after init, then each trajectory


@dataclass(frozen=True)
class EvalCase:
    """An input image and how to get its ground truth."""

    name: str
    image: Path
    synthetic_kind: str | None = None  # re-render the ground truth of this synthetic scene
    gt_cloud: Path | None = None


def synthetic_cases(directory: Path) -> list[EvalCase]:
    """The bundled ground-truth scenes: perspective room, object-centric, 360° panorama."""
    kinds = {"room": "room", "object": "object", "panorama": "panorama360"}
    return [EvalCase(p.stem, p, synthetic_kind=kinds[p.stem]) for p in write_samples(directory)]


def dataset_cases(directory: Path) -> list[EvalCase]:
    """Scenes laid out as ``DIR/SCENE/image.* + gt.ply``."""
    cases = []
    for scene in sorted(p for p in directory.iterdir() if p.is_dir()):
        images = [p for p in scene.glob("image.*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")]
        if images and (scene / "gt.ply").is_file():
            cases.append(EvalCase(scene.name, images[0], gt_cloud=scene / "gt.ply"))
    return cases


def _read_ply(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(o3d.io.read_point_cloud(str(path)).points))


def _camera_scores(ctx: SceneContext, names: list[str]) -> tuple[float, float, float]:
    rot, trans, abs_err = [], [], []
    for name in names:
        data = json.loads(ctx.store.get_bytes(ctx.bucket, output_key(ctx.scene_id, name, "cameras.json")))
        requested = load_trajectory_json(data["requested"]).cameras.c2w.double()
        recovered = load_trajectory_json(data["recovered"]).cameras.c2w.double()
        rot.append(math.degrees(rot_err_rad(recovered, requested)))
        trans.append(trans_err(recovered, requested))
        abs_err.append(ate(recovered, requested))
    return float(np.mean(rot)), float(np.mean(trans)), float(np.mean(abs_err))


def _image_scores(state, truth_rgb: dict[str, torch.Tensor]) -> tuple[float, float]:
    """Generated keyframes of the memory bank against the true images of their trajectory frames."""
    generated = [f for f in state.bank.frames if f.source in truth_rgb]
    if not generated:
        return math.nan, math.nan
    values_psnr, values_ssim = [], []
    for frame in generated:
        truth = truth_rgb[frame.source][frame.index]
        values_psnr.append(min(float(psnr(frame.image.float(), truth)), PSNR_CAP))
        values_ssim.append(float(ssim(frame.image.float(), truth)))
    return float(np.mean(values_psnr)), float(np.mean(values_ssim))


def _coverage(ctx: SceneContext, final, scene) -> tuple[CoverageStep, ...]:
    """Completeness and F1 of the cache after init and after every trajectory against the reachable surface."""
    sizes = {r.trajectory or r.stage: int(r.metrics["cache_points"]) for r in ctx.records.records(ctx.scene_id)
             if r.stage in (INIT, TRAJECTORY)}
    counts = [(INIT, sizes[INIT])] + [(name, sizes[name]) for name, _, _ in final.plans]
    truth = reachable_surface(scene)
    return tuple(coverage_curve(final.cache.points, counts, truth, tau_from_extent(truth, 0.01)))


def evaluate_case(case: EvalCase, settings: Settings, root: Path, coverage: bool = False) -> SceneScores:
    """Run one case through the pipeline into a fresh local store under ``root`` and score it (``coverage``: also
    the cache's coverage of the reachable surface after each trajectory, synthetic scenes only)."""
    settings = settings.model_copy(update={"storage": StorageSettings(backend="local", root=root / case.name)})
    store = open_store(settings.storage)
    process_scene(store, case.name, read_local_input(case.image, settings), settings)
    ctx = SceneContext(store, settings.storage.work_bucket, case.name, settings)
    init = ctx.states.load(INIT)
    names = trajectory_names(ctx)
    final = ctx.states.load(names[-1])
    keys = {name: output_key(case.name, "exports", name) for name in ("fused.ply", GLOBAL_PLY)}
    clouds = {name: _read_ply(store.get_file(ctx.bucket, key, root / name))
              for name, key in keys.items() if store.exists(ctx.bucket, key)}
    steps: tuple[CoverageStep, ...] = ()
    if case.synthetic_kind is not None:
        scene = make_scene(case.synthetic_kind, seed=int((init.scene_spec or {}).get("seed", 0)))
        steps = _coverage(ctx, final, scene) if coverage else ()
        # the cameras as the pipeline generated them (the clip's, float32), so an exact generator scores exactly
        views = {name: scene.render(t.cameras.to(dtype=torch.float32)) for name, _, t in final.plans}
        truth = visible_surface([t.cameras for _, _, t in final.plans], [v.depth for v in views.values()])
        image_psnr, image_ssim = _image_scores(final, {name: v.rgb for name, v in views.items()})
    else:
        truth = _read_ply(case.gt_cloud)
        first = init.starts[0].camera.c2w.double()
        tau = tau_from_extent(truth)
        clouds = {name: first_camera_icp_alignment(c, truth, first, first, max_distance=5 * tau).apply(c)
                  for name, c in clouds.items()}
        image_psnr = image_ssim = math.nan
    scores = {name: point_cloud_scores(cloud, truth, tau_from_extent(truth, 0.01)) for name, cloud in clouds.items()}
    fused, whole = scores["fused.ply"], scores.get(GLOBAL_PLY)
    rot, trans, abs_err = _camera_scores(ctx, names)
    splat = next((r.metrics for r in ctx.records.records(case.name) if r.stage == SPLAT), {})
    return SceneScores(case.name, fused.f1, fused.auc, whole.f1 if whole else math.nan, whole.auc if whole else math.nan,
                       rot, trans, abs_err, image_psnr, image_ssim, *(splat.get(m, math.nan) for m in SPLAT_METRICS),
                       steps)


def run_suite(cases: list[EvalCase], settings: Settings, progress: Callable[[SceneScores], None] = lambda s: None,
              coverage: bool = False) -> Iterator[SceneScores]:
    """Evaluate every case in a temporary directory."""
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            scores = evaluate_case(case, settings, Path(tmp), coverage)
            progress(scores)
            yield scores


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def summarize(rows: list[SceneScores]) -> dict:
    """Per-scene rows and the means of every metric (over the scenes where it applies) under the metric names.

    Metrics that do not apply are ``None`` so that the result is strict JSON.
    """
    clean = lambda v: None if isinstance(v, float) and math.isnan(v) else v  # noqa: E731
    means = {m: clean(_mean([getattr(r, m) for r in rows])) for m in METRICS}
    return {"scenes": [{k: clean(v) for k, v in asdict(r).items()} for r in rows], **means}


def format_table(rows: list[SceneScores], means: dict) -> str:
    """The paper-style table."""
    header = f"{'scene':<12}" + "".join(f"{m:>11}" for m in METRICS)
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row.scene:<12}" + "".join(f"{getattr(row, m):>11.4f}" for m in METRICS))
    lines.append(f"{'mean':<12}" + "".join(f"{math.nan if means[m] is None else means[m]:>11.4f}" for m in METRICS))
    for row in rows:
        if row.coverage:
            lines.append(f"{row.scene} coverage (k: completeness / F1): " + ", ".join(
                f"{step.k} {step.completeness:.3f} / {step.f1:.3f}" for step in row.coverage))
    return "\n".join(lines)
