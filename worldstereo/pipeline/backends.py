"""The three pluggable stages of a scene — depth, video generation, reconstruction — and what flows between them.

Every backend declares the resources it needs, loads its weights once in ``setup()`` and then serves many
requests; an executor (a local loop, a Ray actor) owns one instance.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from torch import Tensor

from worldstereo.config import Settings
from worldstereo.geometry.camera import Camera
from worldstereo.geometry.render import CacheRender
from worldstereo.inputs import SceneInput


@dataclass(frozen=True)
class Resources:
    """What one backend instance needs from the executor."""

    gpus: float = 0.0
    cpus: float = 1.0
    memory_gb: float = 1.0


class Backend(ABC):
    """A stage implementation: declare ``resources``, load in ``setup()``, then process requests."""

    name: ClassVar[str]
    resources: ClassVar[Resources] = Resources()

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()

    def setup(self) -> None:
        """Load weights; called once per instance before the first request."""


@dataclass(frozen=True)
class DepthEstimate:
    """Metric depth of the input: z-depth ``[H,W]`` (perspective) or distance ``[H,W]`` (panorama).

    ``info`` says where the depth and the intrinsics came from (backend, ``intrinsics`` source, focal);
    the scene summary reports it."""

    depth: Tensor
    camera: Camera | None
    info: dict = field(default_factory=dict)


class DepthEstimator(Backend):
    """Depth initialisation of an input image."""

    @abstractmethod
    def estimate(self, scene: SceneInput) -> DepthEstimate: ...


@dataclass(frozen=True)
class References:
    """SSM conditions: retrieved memory-bank frames, each paired with a target frame of the clip.

    Paper rules: one per uniformly sampled target (``F`` pairs). Release rules: the ``R <= 8`` distinct references
    in order of first appearance, each paired with the clip frame where it was first chosen (``ref_index`` = that
    frame - 1, the released model's slot 0..19).
    """

    target_indices: Tensor  # [F] frame indices in the clip
    images: Tensor  # [F,H,W,3]
    cameras: Camera  # F
    scores: Tensor  # [F] frustum-overlap scores
    bank_indices: Tensor  # [F] indices into the memory bank
    target_pointmaps: Tensor | None  # [F,H,W,3] colourised world xyz seen by the target (None: not used)
    reference_pointmaps: Tensor | None  # [F,H,W,3] the same normalisation, seen by the reference
    ref_index: Tensor | None = None  # [R] target slot (frames 1..20 -> 0..19) where each reference was first chosen


@dataclass(frozen=True)
class GenerationRequest:
    """Everything the paper conditions the video model on for one trajectory (Plücker rays of ``cameras`` are
    computed by the generators that use them, at their own resolution and on their own device)."""

    scene_id: str
    trajectory: str
    image: Tensor  # [H,W,3] the trajectory's first (given) frame
    cameras: Camera  # N target cameras; cameras[0] is the given frame's
    ggm: CacheRender  # the 3D cache rendered into the target cameras
    references: References
    scene_spec: dict | None = None  # synthetic inputs name their ground-truth scene
    seed: int = 0
    prompt: str | None = None  # the scene's caption (prompt sidecar); None: the generator's default
    embeddings: dict[str, Tensor] = field(default_factory=dict)  # encoder outputs kept in the scene state, by key


@dataclass(frozen=True)
class GeneratedVideo:
    """Frames ``[N,H,W,3]`` in [0,1]; generators that know geometry also return z-depth ``[N,H,W]``."""

    frames: Tensor
    depth: Tensor | None = None
    embeddings: dict[str, Tensor] = field(default_factory=dict)  # encoder outputs computed for this request


@dataclass(frozen=True)
class Reconstruction:
    """Per-pixel points of a video, given as ``points`` or as z-``depth`` through ``cameras`` (back-projected by
    :meth:`frame_points` only for the frames asked for); ``frame='relative'`` needs a Sim(3) fit back to the cache."""

    colors: Tensor  # [N,H,W,3]
    valid: Tensor | None  # [N,H,W] bool; None with depth: where the depth is finite and positive
    cameras: Camera
    points: Tensor | None = None  # [N,H,W,3]
    depth: Tensor | None = None  # [N,H,W]
    frame: Literal["world", "relative"] = "world"
    extras: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.points is None) == (self.depth is None):
            raise ValueError("a reconstruction gives either points or depth")
        if self.valid is None and self.depth is None:
            raise ValueError("a reconstruction given as points needs its valid mask")

    def frame_points(self, frames: Tensor | slice = slice(None)) -> Tensor:
        """Points ``[F,H,W,3]`` of ``frames`` (meaningful where :meth:`frame_valid`)."""
        if self.points is not None:
            return self.points[frames]
        return self.cameras[frames].backproject(self.depth[frames])

    def frame_valid(self, frames: Tensor | slice = slice(None)) -> Tensor:
        """Valid pixels ``[F,H,W]`` of ``frames``."""
        if self.valid is not None:
            return self.valid[frames]
        depth = self.depth[frames]
        return (depth > 0) & (depth < torch.inf)  # finite and positive: NaN fails both tests


class VideoGenerator(Backend):
    """Camera-guided video generation conditioned on GGM and SSM."""

    pointmaps: ClassVar[bool] = False  # reads the SSM pointmaps of its requests (built only for those that do)

    @abstractmethod
    def generate(self, request: GenerationRequest) -> GeneratedVideo: ...

    def clip_frames(self, planned: int) -> int:
        """Frames generated for a trajectory planned with ``planned`` poses (default: ``generation.clip_frames``)."""
        from worldstereo.pipeline.clips import clip_length

        return clip_length(self.settings, planned)


class Reconstructor(Backend):
    """Feed-forward reconstruction of a generated video."""

    @abstractmethod
    def reconstruct(self, video: GeneratedVideo, request: GenerationRequest) -> Reconstruction: ...
