"""A scene's planned trajectories without generating: their cameras as JSON and a top-down picture of the camera
paths over the initial 3D cache."""

from __future__ import annotations

import imageio.v3 as iio
import torch

from worldstereo.geometry.trajectory import trajectory_to_json
from worldstereo.pipeline.exports import world_up
from worldstereo.pipeline.media import to_uint8
from worldstereo.pipeline.preview import top_down_view
from worldstereo.pipeline.state import SceneState

# path colours, one per trajectory in run order (cycled)
PALETTE = ((1.0, 0.1, 0.1), (0.1, 0.8, 0.1), (0.2, 0.4, 1.0), (1.0, 0.8, 0.0), (1.0, 0.0, 1.0), (0.0, 0.9, 0.9))
_SAMPLES_PER_STEP = 8


def plan_document(state: SceneState) -> dict:
    """``{"scene_id", "kind", "trajectories": [{"name", "start", "w2c", "intrinsics", ...}]}`` (OpenCV w2c, K per pose)."""
    trajectories = [{"name": name, "start": start, **trajectory_to_json(trajectory)}
                    for name, start, trajectory in state.plans]
    return {"scene_id": state.scene_id, "kind": state.kind, "trajectories": trajectories}


def plan_png(state: SceneState, size: int = 256) -> bytes:
    """PNG of the initial cache seen from above with each trajectory's camera path drawn over it."""
    up = world_up(state).to(state.cache.points)
    lift = float((state.cache.points @ up).amax()) + 1.0  # paths above every point, so they win their pixels
    points, colors = [state.cache.points], [state.cache.colors.to(state.cache.points)]
    for index, (_, _, trajectory) in enumerate(state.plans):
        centres = trajectory.cameras.centers.to(state.cache.points)
        s = torch.linspace(0, 1, _SAMPLES_PER_STEP + 1, dtype=centres.dtype)[:-1, None, None]
        path = (centres[:-1] + s * (centres[1:] - centres[:-1])).transpose(0, 1).reshape(-1, 3)
        path = torch.cat([path, centres[-1:]])
        path = path + (lift - path @ up)[:, None] * up
        points.append(path)
        colors.append(torch.tensor(PALETTE[index % len(PALETTE)], dtype=path.dtype).expand(len(path), 3))
    image = top_down_view(torch.cat(points), torch.cat(colors), up, size)
    return iio.imwrite("<bytes>", to_uint8(image), extension=".png")
