"""One scene end to end: depth → initial 3D cache and memory bank → trajectories (GGM + SSM → generate →
reconstruct → align and merge) → Gaussian splats → exports.

Every stage reads the snapshot its predecessor wrote and writes its own, then its stage record: a stage
is done only when its record and every output it lists exist, so a re-run skips finished stages and a
crash inside a trajectory restarts that trajectory from the cache and memory bank as they were before it.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from worldstereo.config import Settings
from worldstereo.errors import ConfigurationError
from worldstereo.geometry.buckets import fit_to_bucket, nearest_bucket
from worldstereo.geometry.camera import Camera
from worldstereo.geometry.far_depth import compress_far_points
from worldstereo.geometry.panorama import panorama_point_cloud, split_panorama
from worldstereo.geometry.render import CacheRender
from worldstereo.geometry.resample import resample_nearest
from worldstereo.geometry.trajectory import (
    Trajectory,
    custom_trajectory,
    keyframe_indices,
    trajectory_to_json,
)
from worldstereo.inputs import SceneInput
from worldstereo.memory.bank import MemoryBank
from worldstereo.memory.cache import Cache3D, UpdateReport, overlap_correspondences
from worldstereo.pipeline.backends import (
    DepthEstimate,
    GeneratedVideo,
    GenerationRequest,
    Reconstruction,
)
from worldstereo.pipeline.clips import ClipFn, bank_frames, clip_indices, clip_length, gather_references
from worldstereo.pipeline.depth.surface import surface_depth
from worldstereo.pipeline.media import encode_video_later
from worldstereo.pipeline.plan_step import extend_plan
from worldstereo.planning.presets import median_depth
from worldstereo.pipeline.registry import backend_class
from worldstereo.pipeline.state import SceneState, Start, StateStore
from worldstereo.pipeline.timing import step
from worldstereo.storage.base import ObjectStore
from worldstereo.catalog.manifests import StageRecord, StageRecords

INIT, TRAJECTORY, SPLAT, EXPORT = "init", "trajectory", "splat", "export"
DEPTH_INFO = "depth.json"  # init output: where the depth and the intrinsics came from

DepthFn = Callable[[SceneInput], DepthEstimate]
GenerateFn = Callable[[GenerationRequest], GeneratedVideo]
ReconstructFn = Callable[[GeneratedVideo, GenerationRequest], Reconstruction]


@dataclass(frozen=True)
class StageResult:
    """What a stage wrote and measured."""

    output_keys: tuple[str, ...]
    metrics: dict[str, float]


@dataclass
class SceneContext:
    """Where a scene reads and writes, and with which settings."""

    store: ObjectStore
    bucket: str
    scene_id: str
    settings: Settings

    @property
    def states(self) -> StateStore:
        return StateStore(self.store, self.bucket, self.scene_id)

    @property
    def records(self) -> StageRecords:
        return StageRecords(self.store, self.bucket)

    def is_done(self, stage: str, trajectory: str | None = None) -> bool:
        return self.records.is_done(self.scene_id, stage, trajectory)

    def finish(self, stage: str, trajectory: str | None, started: float, result: StageResult) -> StageRecord:
        """Write the stage record last, after its outputs."""
        record = StageRecord(self.scene_id, stage, result.output_keys, time.perf_counter() - started,
                             trajectory, result.metrics)
        self.records.write(record)
        return record


def working_size(settings: Settings, height: int, width: int) -> tuple[int, int]:
    """The 480p aspect bucket of an image, scaled by ``resolution_scale`` and kept a multiple of 8."""
    bucket_h, bucket_w = nearest_bucket(height, width)
    scale = settings.resolution_scale
    return max(8, round(bucket_h * scale / 8) * 8), max(8, round(bucket_w * scale / 8) * 8)


# --- init --------------------------------------------------------------------------------------------------
def initial_state(ctx: SceneContext, scene: SceneInput, estimate: DepthEstimate) -> SceneState:
    """Initial 3D cache and memory bank from the input, and the planned trajectories."""
    return plan_scene(ctx.settings, ctx.scene_id, scene, estimate)


def plan_scene(settings: Settings, scene_id: str, scene: SceneInput, estimate: DepthEstimate) -> SceneState:
    """The initial state of a scene from its input and depth, without a store (``worldstereo plan`` previews it)."""
    start = _panorama_start if scene.kind == "panorama" else _perspective_start
    starts, cache, bank = start(settings, scene, estimate)
    state = SceneState(scene_id, scene.kind, cache, bank, starts, [], scene.scene, cache.voxel_size, scene.prompt)
    if scene.presets:
        with step("plan"):
            extend_plan(settings, state)
    for name, waypoints in scene.paths.items():  # custom paths: perspective inputs, from their one start
        state.plans.append((name, 0, custom_trajectory(name, starts[0].camera, waypoints,
                                                       settings.trajectory.num_frames)))
    return state


def _perspective_start(settings: Settings, scene: SceneInput, estimate: DepthEstimate):
    camera = estimate.camera or scene.camera or default_camera(settings, *scene.rgb.shape[:2])
    image, fitted = fit_to_bucket(scene.rgb, camera, working_size(settings, *scene.rgb.shape[:2]))
    fitted = fitted.to(dtype=torch.float64)
    depth = resample_nearest(estimate.depth.to(torch.float64), camera, fitted)
    cache = Cache3D.from_depth(image, depth, fitted, voxel_ratio=settings.memory.voxel_ratio,
                               edge_threshold=settings.memory.edge_threshold)
    bank = MemoryBank()
    bank.add(image[None], fitted, "input")
    return [Start("", image, fitted, depth)], cache, bank


def _panorama_start(settings: Settings, scene: SceneInput, estimate: DepthEstimate):
    height, width = working_size(settings, settings.panorama.view_height, settings.panorama.view_width)
    pano = settings.panorama.model_copy(update={"view_height": height, "view_width": width})
    views = split_panorama(scene.rgb, pano, estimate.depth)
    bank = MemoryBank()
    bank.add(views.images, views.cameras, "panorama")
    points, colors = panorama_point_cloud(scene.rgb, estimate.depth, stride=settings.panorama.cloud_stride,
                                          edge_threshold=settings.memory.edge_threshold)
    cache = Cache3D.from_points(points, colors, settings.memory.voxel_ratio * median_depth(estimate.depth))
    horizon = torch.nonzero(views.pitches_deg.abs() < 1e-6).flatten()
    count = min(settings.panorama.start_views, len(horizon))
    picks = horizon[torch.arange(count) * len(horizon) // count].tolist()
    starts = [Start(f"v{i}", views.images[i], views.cameras[i], views.depth[i]) for i in picks]
    return starts, cache, bank


def default_camera(settings: Settings, height: int, width: int) -> Camera:
    """Identity pose and the configured horizontal field of view, for inputs without a camera file."""
    return Camera.from_fov(torch.eye(4, dtype=torch.float64)[None], height, width, settings.default_fov_deg)


def run_init(ctx: SceneContext, scene: SceneInput, depth_fn: DepthFn) -> StageResult:
    """Depth initialisation, the initial cache and memory bank, the trajectory plan."""
    started = time.perf_counter()
    estimate = surface_depth(ctx.settings, scene, depth_fn(scene))
    state = initial_state(ctx, scene, estimate)
    keys = ctx.states.save(INIT, state) + [ctx.states.key(INIT, DEPTH_INFO)]
    ctx.store.put_bytes(ctx.bucket, keys[-1], json.dumps(estimate.info).encode())
    result = StageResult(tuple(keys), {"cache_points": float(len(state.cache)), "bank_frames": float(len(state.bank)),
                                       "trajectories": float(len(state.plans))})
    ctx.finish(INIT, None, started, result)
    return result


# --- trajectories ----------------------------------------------------------------------------------------
def trajectory_names(ctx: SceneContext) -> list[str]:
    """Record names of the trajectories planned so far, in run order (requires a finished init): the plan of the
    latest snapshot, which holds the choices made after every trajectory that ran."""
    names, ran = ctx.states.plan_names(INIT), 0
    while ran < len(names) and ctx.states.has(names[ran]):
        names, ran = ctx.states.plan_names(names[ran]), ran + 1
    return names


def _previous(names: list[str], name: str) -> str:
    index = names.index(name)
    return INIT if index == 0 else names[index - 1]


def build_request(ctx: SceneContext, state: SceneState, name: str, clip: int | None = None) -> GenerationRequest:
    """GGM renders, Plücker rays and SSM references for the ``clip`` generated poses of one planned trajectory."""
    settings = ctx.settings
    _, start_index, trajectory = next(p for p in state.plans if p[0] == name)
    start = state.starts[start_index]
    planned = len(trajectory.cameras)
    cameras = trajectory.cameras[clip_indices(planned, clip or planned)]
    cameras = cameras.to(device=state.cache.points.device, dtype=torch.float32)
    with step("ggm_render"):
        ggm, xyz = state.cache.render_with_xyz(cameras, radius=settings.memory.splat_radius)
        ggm = with_given_frame(ggm, start.image, start.depth)
    pointmaps = backend_class("generator", settings.generator).pointmaps
    references = gather_references(settings, state.bank, state.cache, cameras, planned, xyz, pointmaps)
    return GenerationRequest(ctx.scene_id, name, start.image, cameras, ggm, references,
                             state.scene_spec, seed=ctx.settings.seed + zlib.crc32(name.encode()), prompt=state.prompt,
                             embeddings=dict(state.embeddings))


def with_given_frame(render: CacheRender, image: torch.Tensor, depth: torch.Tensor) -> CacheRender:
    """Frame 0 of the GGM condition is the real given frame, fully covered."""
    rgb, z, mask = render.rgb.clone(), render.depth.clone(), render.mask.clone()
    rgb[0], z[0], mask[0] = image.to(rgb), depth.to(z), False
    return replace(render, rgb=rgb, depth=z, mask=mask)


def merge_keyframes(cache: Cache3D, recon: Reconstruction, name: str, keyframes: int,
                    far_depth_ratio: float | None = None) -> UpdateReport:
    """Merge the valid pixels of ``keyframes`` evenly spaced frames of ``recon`` into the 3D cache (a reconstruction
    in a relative frame is Sim(3)-aligned to the cache first), each frame's far depth compressed as the input's."""
    frames = keyframe_indices(len(recon.colors), min(keyframes, len(recon.colors)))
    colors, valid = recon.colors[frames], recon.frame_valid(frames)
    points = compress_far_points(recon.frame_points(frames), valid, recon.cameras[frames], far_depth_ratio)
    anchors = (None, None)
    if recon.frame == "relative":
        anchors = overlap_correspondences(cache, points, recon.cameras[frames], valid)
    pixels = valid.flatten().nonzero().squeeze(1)  # one index for both gathers
    points, colors = points.reshape(-1, 3).index_select(0, pixels), colors.reshape(-1, 3).index_select(0, pixels)
    return cache.update(points, colors.float(), name, anchor_src=anchors[0], anchor_dst=anchors[1],
                        align="none" if recon.frame == "world" else "robust")


def run_trajectory(ctx: SceneContext, name: str, generate_fn: GenerateFn, reconstruct_fn: ReconstructFn,
                   names: list[str] | None = None, clip_fn: ClipFn | None = None) -> StageResult:
    """One trajectory: condition, generate, reconstruct, merge into the cache, extend the memory bank.

    ``clip_fn`` (the generator's ``clip_frames``; default ``generation.clip_frames``) sets how many of the
    planned poses are generated.
    """
    started = time.perf_counter()
    names = names or trajectory_names(ctx)
    with step("snapshot_load"):
        state = ctx.states.load(_previous(names, name))
        state.cache = state.cache.to(ctx.settings.resolved_device())  # geometry stays on the generator's device
    plan = next(i for i, p in enumerate(state.plans) if p[0] == name)
    planned = len(state.plans[plan][2])
    request = build_request(ctx, state, name, (clip_fn or (lambda n: clip_length(ctx.settings, n)))(planned))
    mp4 = (ctx.settings.video_fps, ctx.settings.video_preset)
    encodes = [encode_video_later(request.ggm.rgb, *mp4)]  # both encodes overlap the steps that follow
    with step("generate"):
        video = generate_fn(request)
    if len(video.frames) != len(request.cameras):
        raise ConfigurationError(f"the generator made {len(video.frames)} frames for a clip of {len(request.cameras)}")
    encodes.insert(0, encode_video_later(video.frames, *mp4))
    state.embeddings.update(video.embeddings)
    with step("reconstruct"):
        recon = reconstruct_fn(video, request)
    with step("cache_update"):
        report = merge_keyframes(state.cache, recon, name, ctx.settings.trajectory.keyframes,
                                 ctx.settings.memory.far_depth_ratio)
    with step("bank_update"):
        state.bank.add(video.frames, request.cameras, name,
                       frames=bank_frames(ctx.settings, len(video.frames)))
    _, start_index, trajectory = state.plans[plan]  # a run trajectory keeps the cameras it was generated at
    state.plans[plan] = (name, start_index, replace(trajectory, cameras=request.cameras.to("cpu", torch.float64)))
    with step("plan"):
        choices = extend_plan(ctx.settings, state) if plan == len(state.plans) - 1 else []
    keys = [ctx.states.key(name, "video.mp4"), ctx.states.key(name, "condition.mp4"),
            ctx.states.key(name, "cameras.json")]
    cameras = {"requested": trajectory_to_json(Trajectory(name, request.cameras)),
               "recovered": trajectory_to_json(Trajectory(name, recon.cameras))}
    ctx.store.put_bytes(ctx.bucket, keys[2], json.dumps(cameras).encode())
    with step("snapshot_save"):
        snapshot_keys = ctx.states.save(name, state)
    with step("video_encode"):  # what is left of the encodes once every other step is done
        for key, encode in zip(keys, encodes):
            ctx.store.put_bytes(ctx.bucket, key, encode.result())
    keys += snapshot_keys
    metrics = {
        "frames": float(len(video.frames)),
        "hole_ratio": float(request.ggm.mask[1:].float().mean()) if len(video.frames) > 1 else 0.0,
        "reference_score": float(request.references.scores.mean()),
        "points_added": float(report.points_added),
        "cache_points": float(len(state.cache)),
        "align_inliers": float(report.inliers),
    } | ({"next_score": choices[0].score} if choices and choices[0].score is not None else {})
    result = StageResult(tuple(keys), metrics)
    ctx.finish(TRAJECTORY, name, started, result)
    return result
