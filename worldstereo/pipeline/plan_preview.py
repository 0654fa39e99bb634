"""A scene's planned trajectories without generating: their cameras as JSON and a top-down picture of the camera
paths over the initial 3D cache; with the ``explore`` planner, every candidate of its first choice and its score."""

from __future__ import annotations

import imageio.v3 as iio
import torch

from worldstereo.config import Settings
from worldstereo.geometry.trajectory import trajectory_to_json
from worldstereo.pipeline.exports import world_up
from worldstereo.pipeline.media import to_uint8
from worldstereo.pipeline.plan_step import plan_input
from worldstereo.pipeline.preview import top_down_view
from worldstereo.pipeline.state import SceneState
from worldstereo.planning.explore import scored_candidates

# path colours, one per trajectory in run order (cycled)
PALETTE = ((1.0, 0.1, 0.1), (0.1, 0.8, 0.1), (0.2, 0.4, 1.0), (1.0, 0.8, 0.0), (1.0, 0.0, 1.0), (0.0, 0.9, 0.9))
_SAMPLES_PER_STEP = 8


def plan_document(state: SceneState, settings: Settings | None = None) -> dict:
    """``{"scene_id", "kind", "trajectories": [{"name", "start", "w2c", "intrinsics", ...}], "choices"}`` (OpenCV w2c,
    K per pose); with the ``explore`` planner also ``candidates``: label, score and camera centres of every candidate
    of the first choice, best first."""
    trajectories = [{"name": name, "start": start, **trajectory_to_json(trajectory)}
                    for name, start, trajectory in state.plans]
    document = {"scene_id": state.scene_id, "kind": state.kind, "trajectories": trajectories, "choices": state.choices}
    if settings is not None and settings.trajectory.planner == "explore":
        scored = sorted(scored_candidates(plan_input(state), settings.trajectory), key=lambda pair: -pair[1])
        document["candidates"] = [{"label": c.label, "score": score,
                                   "centers": c.trajectory.cameras.centers.double().cpu().tolist()} for c, score in scored]
    return document


def plan_png(state: SceneState, document: dict | None = None, size: int = 256) -> bytes:
    """PNG of the initial cache seen from above with each trajectory's camera path drawn over it (candidates of the
    first choice, if the document holds them, in grey: the brighter, the higher their score)."""
    up = world_up(state).to(state.cache.points)
    lift = float((state.cache.points @ up).amax()) + 1.0  # paths above every point, so they win their pixels
    points, colors = [state.cache.points], [state.cache.colors.to(state.cache.points)]
    candidates = (document or {}).get("candidates", [])
    top = max([c["score"] for c in candidates] + [1e-12])
    paths = [(torch.tensor(c["centers"]), (0.2 + 0.6 * max(c["score"], 0.0) / top,) * 3) for c in reversed(candidates)]
    paths += [(t.cameras.centers, PALETTE[i % len(PALETTE)]) for i, (_, _, t) in enumerate(state.plans)]
    for centres, colour in paths:
        centres = centres.to(state.cache.points)
        s = torch.linspace(0, 1, _SAMPLES_PER_STEP + 1, dtype=centres.dtype)[:-1, None, None]
        path = (centres[:-1] + s * (centres[1:] - centres[:-1])).transpose(0, 1).reshape(-1, 3)
        path = torch.cat([path, centres[-1:]])
        path = path + (lift - path @ up)[:, None] * up
        points.append(path)
        colors.append(torch.tensor(colour, dtype=path.dtype).expand(len(path), 3))
    image = top_down_view(torch.cat(points), torch.cat(colors), up, size)
    return iio.imwrite("<bytes>", to_uint8(image), extension=".png")
