"""One settings object for the whole system: environment (``WORLDSTEREO_*``), an optional YAML file, defaults.

Nested fields use ``__`` in environment names, e.g. ``WORLDSTEREO_STORAGE__ENDPOINT=minio:9000``.
The YAML file is named by ``WORLDSTEREO_CONFIG``. Secrets are ``SecretStr``: they print as ``**********``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

TrajectoryName = Literal["orbit", "up", "right", "left"]
ReleaseTrajectoryName = Literal["eloop", "up", "right", "left"]


class StorageSettings(BaseModel):
    """Where objects and manifests live. ``local`` is a directory; ``s3`` is any S3-compatible server."""

    backend: Literal["local", "s3"] = "local"
    root: Path = Path(".worldstereo/store")
    endpoint: str = "127.0.0.1:9000"
    secure: bool = False
    region: str = "us-east-1"
    access_key: SecretStr = SecretStr("")
    secret_key: SecretStr = SecretStr("")
    input_bucket: str = "worldstereo-input"
    work_bucket: str = "worldstereo-work"
    multipart_part_size: int = Field(default=8 * 1024 * 1024, ge=5 * 1024 * 1024)


class RaySettings(BaseModel):
    """Ray cluster to join; ``address=None`` starts a local one sized to this machine."""

    address: str | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None  # a local cluster's GPUs (None: Ray detects them)
    object_store_memory: int | None = None  # a local cluster's object store, bytes (None: Ray's default, 30% of RAM)
    # a model call that does not return in this time fails as transient (its stage retries)
    call_timeout_s: float = Field(default=3600.0, gt=0)
    stage_cpus: float = Field(default=1.0, gt=0)  # what each stage task of a scene asks of Ray
    # a stage task (queued or running) not returned in this time is cancelled and fails as transient
    stage_timeout_s: float = Field(default=10800.0, gt=0)
    stage_retries: int = Field(default=3, ge=0)  # Ray re-runs of a stage task whose worker died
    actor_cpu_share: float = Field(default=0.5, gt=0, lt=1)  # of each node's CPUs, for model actors
    # torch threads of a stage task or model actor (None: stage_cpus / (1 - actor_cpu_share), see tasks.ray_pools)
    worker_threads: int | None = Field(default=None, ge=1)
    # a scene claim (renewed every third of this by its batch) not renewed for this long may be taken over
    claim_ttl_s: float = Field(default=180.0, gt=0)


class BatchSettings(BaseModel):
    """How the ``scene-batch`` flow splits a catalog into flow runs and how much it shows in Prefect."""

    shard_size: int = Field(default=250, ge=1)  # scenes per shard (a subflow run with its own table)
    shards_in_flight: int = Field(default=2, ge=1)  # shard runs at once, sharing the batch's scene slots
    # a batch of at most this many scenes gets a task run per stage and a preview artifact per scene; a larger one
    # logs each stage in its scene's task run (a few kB of Prefect database per scene instead of tens)
    detail_max_scenes: int = Field(default=100, ge=0)


class ModelPaths(BaseModel):
    """Local weight locations. Nothing is ever downloaded."""

    moge: Path | None = None  # MoGe checkpoint: model.pt or a directory holding it
    depth_pro: Path | None = None  # apple/DepthPro-hf layout (config.json, model.safetensors)
    depth_anything_metric: Path | None = None  # Depth-Anything-V2-Metric-{Indoor,Outdoor}-*-hf layout
    depth_anything_3: Path | None = None  # depth-anything/DA3-* layout (config.json, model.safetensors)
    wan_i2v: Path | None = None
    worldstereo_branches: Path | None = None
    worldmirror: Path | None = None
    worldmirror_2: Path | None = None  # a HY-World 2.0 checkout with ckpts/HY-WorldMirror-2.0 (reconstructor worldmirror-2)
    sky_segmenter: Path | None = None  # a transformers semantic segmenter with a "sky" label (e.g. SegFormer ADE20K)
    dinov2: Path | None = None  # DINOv2 (transformers Dinov2Model) for the released retrieval's reference reduction
    wan_i2v_dmd: Path | None = None  # Wan2.1-I2V layout (transformer/, vae/) with the DMD-distilled transformer
    prompt_embeds: Path | None = None  # safetensors: UMT5 prompt_embeds [512,4096], optional negative/CLIP image
    worldstereo_release: Path | None = None  # worldstereo-{camera,memory,memory-dmd}/ (config.json + model.safetensors)


class GeneratorSettings(BaseModel):
    """Sampling of the WorldStereo video model. ``dmd``: 4 CFG-free steps of the DMD-distilled transformer
    (``models.wan_i2v_dmd``, else ``models.wan_i2v`` must hold it); ``flow``: ``steps`` flow-matching steps with
    classifier-free guidance ``guidance`` (needs ``negative_prompt_embeds``). ``steps=None``: 4 (dmd), 40 (flow)."""

    sampler: Literal["dmd", "flow"] = "dmd"
    steps: int | None = Field(default=None, ge=1)
    guidance: float = Field(default=5.0, ge=1.0)
    shift: float = Field(default=5.0, gt=0.0)
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    offload: bool = False
    # frames a weight-free generator (oracle, warp) makes of a planned trajectory, at linspace(0, planned-1, clip)
    # of its poses; None: every planned pose. The released model's clip is 21.
    clip_frames: int | None = Field(default=None, ge=2)
    # The released model (generator ``worldstereo``): its sampler follows the variant's config (UniPC + CFG for
    # camera/memory, flow DMD for memory-dmd); ``steps``/``guidance`` above override its defaults.
    variant: Literal["camera", "memory", "memory-dmd"] = "memory-dmd"
    default_prompt: str = ""  # when an input has no prompt sidecar


class ReleasePresetSettings(BaseModel):
    """The released reconstruction trajectories (``examples/reconstruction``): an ellipse loop in the image plane,
    a rise about a horizontal axis, and half turns about the vertical through the point at depth ``d``."""

    order: tuple[ReleaseTrajectoryName, ...] = ("eloop", "up", "right", "left")
    eloop_rx_ratio: float = Field(default=0.3, gt=0.0)  # x median depth
    eloop_ry_ratio: float = Field(default=0.4, gt=0.0)  # x median depth
    up_deg: float = 45.0
    up_radius_ratio: float = Field(default=1.0, gt=0.0)  # pivot of the rise, x median depth ahead
    turn_deg: float = 180.0  # right / left


class ExploreSettings(BaseModel):
    """The ``explore`` planner: candidate paths scored on a coarse occupancy grid of the 3D cache."""

    grid_size: int = Field(default=64, ge=8)  # voxels along the longest side of the grid
    grid_margin: float = Field(default=0.25, ge=0.0)  # x the cache's extent, added on every side
    score_width: int = Field(default=32, ge=4)  # pixels across each scored view (height by aspect)
    score_frames: int = Field(default=4, ge=1)  # views of a candidate that are scored (frame 0 excluded)
    carve_width: int = Field(default=32, ge=4)  # pixels across each memory-bank view that carves free space
    range_ratio: float = Field(default=3.0, gt=0.0)  # x median depth: how far a scored ray looks
    targets: int = Field(default=6, ge=0)  # hole clusters that get aimed paths and orbits
    cluster_voxels: int = Field(default=8, ge=1)  # side of the cells that group hole voxels into clusters
    start_poses: int = Field(default=3, ge=0)  # end cameras of the latest paths that candidates start from
    aim_distance: float = Field(default=0.5, gt=0.0)  # x median depth: viewpoint's distance to its target
    orbit_deg: float = Field(default=90.0, gt=0.0)  # arc of an orbit about a target
    turn_deg: float = Field(default=90.0, gt=0.0)  # a turn in place about the vertical, either way
    slack_ratio: float = Field(default=0.1, ge=0.0)  # x median depth: how far a camera may leave carved free space
    clearance_voxels: int = Field(default=1, ge=0)  # cache-occupied voxels grown by this before paths are checked
    surface_voxels: int = Field(default=2, ge=0)  # unknown voxels this near the cache's surface may hold new surface
    open_weight: float = Field(default=0.5, ge=0.0)  # share counted of a ray into unknown space out of grid or reach
    runners_up: int = Field(default=5, ge=0)  # candidates kept beside each choice in the scene's state


class TrajectorySettings(BaseModel):
    """Camera paths: the paper's presets (Appendix C) or the release's (``preset_set``), chosen by ``planner``:
    ``presets`` runs the preset set from every start (then repeats its shapes from the last camera up to
    ``max_trajectories``); ``explore`` chooses each next path on the live cache until ``max_trajectories`` or until
    the best candidate's score (steradians of new surface) is below ``min_gain``."""

    planner: Literal["presets", "explore"] = "explore"
    max_trajectories: int | None = Field(default=None, ge=1)  # None: the preset set once from every start
    min_gain: float = Field(default=0.01, ge=0.0)  # steradians
    explore: ExploreSettings = ExploreSettings()
    preset_set: Literal["paper", "release"] = "paper"
    release: ReleasePresetSettings = ReleasePresetSettings()
    order: tuple[TrajectoryName, ...] = ("orbit", "up", "right", "left")
    up_deg: float = 45.0
    left_deg: float = 90.0
    right_deg: float = 90.0
    orbit_radius_ratio: float = 0.3
    orbit_aspect: float = Field(default=1.0, gt=0.0)  # vertical / horizontal semi-axis of the orbit
    num_frames: int = Field(default=81, ge=2)
    num_keyframes: int | None = Field(default=None, ge=1)
    shrink_for_collisions: bool = True
    shrink_factor: float = Field(default=0.8, gt=0.0, lt=1.0)  # per step while a path collides
    min_fraction: float = Field(default=0.1, gt=0.0, le=1.0)  # of the configured angle (orbit: radius)
    surface_margin: float = Field(default=0.05, ge=0.0)  # x median depth, to the surface the input sees
    clearance: float = Field(default=0.05, ge=0.0)  # x median depth, to any 3D-cache point
    collision_chunk: int = Field(default=65536, gt=0)  # cache points per distance block

    @property
    def keyframes(self) -> int:
        """Frames per trajectory that are reconstructed and kept in the memory bank (default: every 4th)."""
        return min(self.num_keyframes or (self.num_frames - 1) // 4 + 1, self.num_frames)


class MemorySettings(BaseModel):
    """Memory bank, retrieval (SSM) and 3D cache (GGM) parameters. ``rules``: ``paper`` keeps every keyframe
    and retrieves for ``N/4`` sampled targets; ``release`` keeps ``bank_frames`` frames per clip at the released
    indices and retrieves one reference per target frame 1..20 (quality-aware furthest-point reduction)."""

    rules: Literal["paper", "release"] = "paper"
    bank_frames: int = Field(default=8, ge=1)  # release rules: frames of each clip entering the bank
    max_references: int = 8
    frustum_near: float = 0.1
    frustum_far: float = 10.0
    voxel_ratio: float = 0.002
    splat_radius: int = 1
    # depth beyond this x each image's median is compressed (d' = 2m - m²/d) before it enters the cache; None: off
    far_depth_ratio: float | None = Field(default=8.0, gt=1.0)
    # sky of the input marked as no surface: auto = the sky segmenter when configured, else the heuristic
    sky: Literal["auto", "segmenter", "heuristic", "off"] = "auto"
    sky_depth_ratio: float = Field(default=50.0, gt=1.0)  # heuristic: far = beyond this x the median depth
    edge_threshold: float = 0.12  # Sobel on normalised disparity, as the released cache renderer


class PanoramaSettings(BaseModel):
    """Equirectangular split into the initial memory bank."""

    num_yaws: int = 9
    pitches_deg: tuple[float, ...] = (0.0, 26.57, -26.57)
    fov_x_deg: float = 120.0
    fov_y_deg: float = 90.0
    view_width: int = 832
    view_height: int = 480
    start_views: int = 3
    cloud_stride: int = 1


class WebhookSettings(BaseModel):
    """The bucket-notification receiver (``worldstereo serve-webhook``) and the runs it starts.

    ``parameters``: flow parameters of every run it starts (``input_prefix`` is the new image's key), e.g.
    ``WORLDSTEREO_WEBHOOK__PARAMETERS='{"trajectory": {"num_frames": 5}, "overrides": {"resolution_scale": 0.25}}'``.
    """

    token: SecretStr | None = None  # bearer token every notification must carry (None: accept any request)
    deployment: str = "scene-batch/scene-batch"
    parameters: dict[str, Any] = {}


class SplatSettings(BaseModel):
    """3D Gaussian splats trained on a scene's memory-bank frames after its last trajectory (the ``splat`` stage).

    Every ``held_out_stride``-th frame (0: none) is left out of training and scored; ``resolution_scale`` is
    of the frames' working size; the cloud is subsampled to ``max_init_points`` Gaussians to start from.
    """

    enabled: bool = True
    iterations: int = Field(default=300, ge=1)
    resolution_scale: float = Field(default=0.5, gt=0.0, le=1.0)
    sh_degree: int = Field(default=1, ge=0, le=3)
    held_out_stride: int = Field(default=8, ge=0)
    max_init_points: int = Field(default=10_000, ge=16)
    min_frames: int = Field(default=2, ge=1)
    ssim_weight: float = Field(default=0.2, ge=0.0, le=1.0)  # lambda of D-SSIM (3DGS Eq. 7)
    depth_weight: float = Field(default=0.1, ge=0.0)  # relative depth error against the frames' depth
    scale_weight: float = Field(default=0.01, ge=0.0)  # mean Gaussian scale / scene extent
    opacity_weight: float = Field(default=0.001, ge=0.0)  # mean opacity
    backend: Literal["auto", "gsplat", "torch"] = "auto"  # auto: gsplat on CUDA, the torch rasterizer elsewhere
    mesh_voxels: int = Field(default=192, ge=16)  # TSDF voxels along the longest side of the scene's box
    mesh_max_triangles: int = Field(default=200_000, ge=100)


class Settings(BaseSettings):
    """Everything configurable. Defaults run a whole batch on one machine with no external services."""

    model_config = SettingsConfigDict(
        env_prefix="WORLDSTEREO_", env_nested_delimiter="__", extra="forbid"
    )

    storage: StorageSettings = StorageSettings()
    ray: RaySettings = RaySettings()
    batch: BatchSettings = BatchSettings()
    models: ModelPaths = ModelPaths()
    trajectory: TrajectorySettings = TrajectorySettings()
    memory: MemorySettings = MemorySettings()
    panorama: PanoramaSettings = PanoramaSettings()
    generation: GeneratorSettings = GeneratorSettings()
    webhook: WebhookSettings = WebhookSettings()
    splat: SplatSettings = SplatSettings()
    device: str = "auto"
    depth_backend: str = "auto"  # a depth backend of worldstereo.pipeline.registry
    max_depth: int | None = Field(default=None, gt=0)  # metres; Depth-Anything-V2 metric head, None: the checkpoint's
    generator: str = "oracle"
    reconstructor: str = "rendered-depth"
    resolution_scale: float = Field(default=1.0, gt=0.0, le=2.0)
    default_fov_deg: float = 60.0
    video_fps: int = 16
    # libx264 preset of the trajectory videos: ultrafast takes about half the encoder CPU of veryfast (which
    # the encodes share with the next steps) for 2-4x the bytes, still far below a trajectory's snapshot
    video_preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = "ultrafast"
    max_input_pixels: int = 64_000_000
    # export exports/fused_global.ply: the reconstructor once over every memory-bank frame, fitted to the cache
    global_reconstruction: bool = False
    seed: int = 0

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value != "auto" and not value.startswith(("cpu", "cuda", "meta")):
            raise ValueError(f"device must be auto, cpu, cuda[:N] or meta, not {value!r}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("WORLDSTEREO_CONFIG")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    def resolved_device(self) -> str:
        """``auto`` → ``cuda`` when available, else ``cpu``."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


def load_settings(**overrides: object) -> Settings:
    """Settings from init overrides > environment > YAML file > defaults."""
    return Settings(**overrides)


def with_overrides(base: Settings, update: dict) -> Settings:
    """``base`` with ``update`` merged in (nested dicts merge) and everything validated again: the one path
    for command-line and flow-parameter overrides (``model_copy`` would skip the bounds)."""
    return Settings.model_validate(_merge(base.model_dump(), update))


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
