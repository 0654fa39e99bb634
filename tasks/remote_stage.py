"""One stage of one scene as a Ray task: the library's runner on a cluster worker.

The worker reads the input and the previous stage's snapshot from the store, does the CPU geometry
(GGM renders, retrieval, pointmaps, cache merge, encodes, exports) and calls the model actors. Requests
and videos travel between the worker and the actors as Ray object references; the flow process only
sends ids and receives a :class:`StageOutcome`. Each stage takes the least busy actor of each pool and is
waited for at most ``ray.stage_timeout_s``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import ray
import torch

from prefect.logging import get_run_logger

from tasks.artifacts import scene_markdown
from tasks.errors import plain, underlying
from tasks.ray_pools import ModelCallTimeout, StageActors, check_stage_fits, get_pools, worker_threads
from worldstereo.config import Settings
from worldstereo.pipeline.backends import GeneratedVideo, GenerationRequest
from worldstereo.pipeline.local import read_input
from worldstereo.pipeline.registry import make_backend
from worldstereo.pipeline.runner import Models, Stage, planned_after, run_stage
from worldstereo.pipeline.scene import EXPORT, INIT, SPLAT, TRAJECTORY, SceneContext
from worldstereo.storage.factory import open_store


@dataclass(frozen=True)
class StageOutcome:
    """What the flow learns of a stage: whether it ran, how long it took, where, and (init, trajectories) the trajectory
    names planned when it finished."""

    stage: str
    ran: bool
    duration_s: float
    names: list[str] | None = None
    markdown: str | None = None  # export: the scene's preview for the Prefect UI
    node_id: str | None = None  # the Ray node the stage task ran on


class StageTimeout(TimeoutError):
    """A stage task did not return within ``ray.stage_timeout_s`` (transient: the scene resumes from its last
    finished stage)."""


class ActorModels:
    """Model calls on the stage's actors. A generated video goes to the reconstructor as the generator
    actor's object reference, and a request is put into the object store once for both calls."""

    def __init__(self, actors: StageActors) -> None:
        self.actors = actors
        self._refs: dict[int, ray.ObjectRef] = {}

    def _call(self, kind: str, method: str, *args: Any) -> Any:
        ref = self.actors.actors[kind].call.remote(method, *args)
        try:
            return ref, ray.get(ref, timeout=self.actors.call_timeout_s)
        except ray.exceptions.GetTimeoutError as exc:
            ray.cancel(ref)
            raise ModelCallTimeout(f"{kind} {method} did not return within {self.actors.call_timeout_s:g} s "
                                   "(ray.call_timeout_s)") from exc

    def estimate(self, scene):
        return self._call("depth", "estimate", scene)[1]

    def generate(self, request: GenerationRequest) -> GeneratedVideo:
        request_ref = ray.put(request)
        video_ref, video = self._call("generator", "generate", request_ref)
        self._refs = {id(request): request_ref, id(video): video_ref}
        return video

    def reconstruct(self, video: GeneratedVideo, request: GenerationRequest):
        return self._call("reconstructor", "reconstruct", self._refs.get(id(video), video),
                          self._refs.get(id(request), request))[1]


def execute_stage(settings: Settings, scene_id: str, input_key: str, stage: Stage, names: list[str] | None,
                  actors: StageActors) -> StageOutcome:
    """Run ``stage`` of the scene unless it is done (the body of :data:`stage_task_remote`)."""
    started = time.perf_counter()
    torch.set_num_threads(worker_threads(settings.ray))
    store = open_store(settings.storage)
    ctx = SceneContext(store, settings.storage.work_bucket, scene_id, settings)
    models = ActorModels(actors)
    clip = make_backend("generator", settings.generator, settings).clip_frames  # from settings: no weights load
    ran = run_stage(ctx, stage, Models(models.estimate, models.generate, models.reconstruct, clip),
                    lambda: read_input(store, settings.storage.input_bucket, input_key, settings), names)
    markdown = scene_markdown(settings, scene_id) if stage.kind == EXPORT else None
    if stage.kind in (INIT, TRAJECTORY):
        names = planned_after(ctx, stage)
    return StageOutcome(stage.label, ran, time.perf_counter() - started, names, markdown,
                        ray.get_runtime_context().get_node_id())


stage_task_remote = ray.remote(execute_stage)


def splat_gpus(settings: Settings, stage: Stage) -> int:
    """The splat stage asks for a GPU while the cluster has one free (its CPU path otherwise)."""
    if stage.kind != SPLAT or not settings.splat.enabled:
        return 0
    return int(ray.available_resources().get("GPU", 0.0) >= 1)


def run_on_cluster(settings: Settings, scene_id: str, input_key: str, stage: Stage,
                   names: list[str] | None) -> StageOutcome:
    """Submit the stage as a Ray task and wait for its small outcome, at most ``ray.stage_timeout_s``; a remote
    error is raised as itself, a stage no alive node can hold beside its actors as a ``ConfigurationError``."""
    pools = get_pools(settings)
    check_stage_fits(settings.ray, pools.plan)
    options = {"num_cpus": settings.ray.stage_cpus, "max_retries": settings.ray.stage_retries,
               "retry_exceptions": False, "num_gpus": splat_gpus(settings, stage)}
    with pools.lease(scene_id) as actors:
        ref = stage_task_remote.options(**options).remote(settings, scene_id, input_key, stage, names, actors)
        try:
            return ray.get(ref, timeout=settings.ray.stage_timeout_s)
        except ray.exceptions.GetTimeoutError as exc:
            ray.cancel(ref, force=True)
            raise StageTimeout(f"stage {stage.label} of {scene_id} did not return within "
                               f"{settings.ray.stage_timeout_s:g} s (ray.stage_timeout_s)") from exc
        except ray.exceptions.RayTaskError as exc:
            get_run_logger().error("stage %s of %s failed on the cluster:\n%s", stage.label, scene_id, plain(str(exc)))
            raise underlying(exc) from None
