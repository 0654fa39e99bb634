"""Camera trajectories around a single input view (paper Appendix C, or the release's presets) and their JSON form.

Two preset sets (``TrajectorySettings.preset_set``). ``paper``: the presets below. ``release``: the released
reconstruction trajectories (``eloop``, ``up``, ``right``, ``left``; see ``_release_path``), whose ``up`` and
half turns move about the world's vertical rather than the camera's own axes. Both are shrunk alike.

Every paper preset starts exactly at the input camera, keeps its intrinsics and keeps looking at the
rotation centre ``c = C + d * forward`` (``C`` the input camera position, ``d`` the scene's median
depth), with the input camera's up direction (its ``-y`` axis) as the up vector:

- ``up``: ``C`` rises along an elevation arc of radius ``d`` about ``c`` by ``up_deg`` (a rotation
  about the camera's horizontal axis through ``c``).
- ``right`` / ``left``: ``C`` moves along an azimuth arc of radius ``d`` about ``c`` by
  ``right_deg`` / ``left_deg`` (a rotation about the camera's up axis through ``c``).
- ``orbit``: ``C`` runs once around a closed ellipse in the input image plane with horizontal
  semi-axis ``rx = orbit_radius_ratio * d`` and vertical semi-axis ``ry = orbit_aspect * rx``,
  centred at ``C - rx * right`` so that it passes through ``C`` (first and last frame) and rises first.

The path parameter advances at constant angular speed: frame ``i`` of ``N`` sits at angle
``angle * i / (N - 1)``, so consecutive cameras are equally spaced and uniform keyframes are
uniform in angle.

Collision shrinking: a path collides when one of its camera positions (frames 1..N-1)

- lies in the input view behind the surface it sees: z-depth >= the input depth at its pixel minus
  ``surface_margin * d``;
- lies outside the input view (beside or behind it) within ``surface_margin * d`` of, or beyond,
  the tangent plane of the surface at the image-border pixel in the direction of its lateral
  offset (the border surface is assumed to extend as a plane);
- comes closer to a 3D-cache point than ``clearance * d`` (capped at half the input camera's own
  clearance, so a cache hugging the input view does not block every path).

Surfaces the input view does not see are only known through ``cache_points`` (e.g. a panorama's
cache, or the cache grown by earlier trajectories).

While a path collides its angle (orbit: its radii) is multiplied by ``shrink_factor``, down to
``min_fraction`` of the configured value; ``Trajectory.fraction`` records what was kept. Every
angle, ratio, margin and factor named here is a ``TrajectorySettings`` field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from worldstereo.config import TrajectorySettings
from worldstereo.errors import InvalidInputError
from worldstereo.geometry.camera import Camera, look_at, rigid_inverse
from worldstereo.geometry.rotations import quaternion_to_rotation, rotation_to_quaternion, slerp


@dataclass(frozen=True)
class Trajectory:
    """A named camera path with the parameters it was built from (``center`` is ``None`` for custom paths)."""

    name: str
    cameras: Camera
    center: Tensor | None = None
    radius: float = 0.0
    angle_deg: float = 0.0
    fraction: float = 1.0

    def __len__(self) -> int:
        return len(self.cameras)


def keyframe_indices(num_frames: int, num_keyframes: int) -> Tensor:
    """``num_keyframes`` uniformly spaced frame indices in ``[0, num_frames)``, first and last included."""
    if num_frames < 1 or not 1 <= num_keyframes <= num_frames:
        raise InvalidInputError(f"need 1 <= num_keyframes ({num_keyframes}) <= num_frames ({num_frames})")
    if num_keyframes == 1:
        return torch.zeros(1, dtype=torch.long)
    return torch.round(torch.linspace(0, num_frames - 1, num_keyframes, dtype=torch.float64)).long()


def plan_trajectories(
    input_camera: Camera,
    median_depth: float,
    settings: TrajectorySettings,
    *,
    depth: Tensor | None = None,
    cache_points: Tensor | None = None,
) -> list[Trajectory]:
    """The configured preset set in its order, each shrunk where it would collide with the scene."""
    if len(input_camera) != 1:
        raise InvalidInputError(f"the planner takes exactly one input camera, got {len(input_camera)}")
    if not math.isfinite(median_depth) or median_depth <= 0:
        raise InvalidInputError(f"median depth must be positive and finite, got {median_depth}")
    if settings.num_frames < 2:
        raise InvalidInputError("a trajectory needs at least two frames")
    if depth is not None and depth.shape != (input_camera.height, input_camera.width):
        raise InvalidInputError(
            f"depth must be {(input_camera.height, input_camera.width)}, got {tuple(depth.shape)}"
        )
    collides = _CollisionTest(input_camera, median_depth, depth, cache_points, settings)
    return [preset_trajectory(name, input_camera, median_depth, settings, collides) for name in preset_order(settings)]


def preset_order(settings: TrajectorySettings) -> tuple[str, ...]:
    """The trajectory names of the configured preset set, in run order."""
    return settings.release.order if settings.preset_set == "release" else settings.order


Collides = Callable[[Tensor], bool]  # camera positions [N,3] of a path -> whether it enters the scene


def preset_trajectory(name: str, camera: Camera, d: float, settings: TrajectorySettings, collides: Collides) -> Trajectory:
    """The preset ``name`` of the configured set from ``camera``, shrunk while ``collides`` says it enters the scene."""
    start = camera.c2w[0]
    t = torch.linspace(0.0, 1.0, settings.num_frames, dtype=camera.dtype, device=camera.device)
    planner = _release_path if settings.preset_set == "release" else _paper_path
    path, center, radius, angle, scales_radius = planner(name, start, d, settings, t)
    fraction = shrunk_fraction(path, collides, settings)
    c2w = path(fraction)
    c2w[0] = start
    cameras = Camera(camera.K.expand(len(c2w), 3, 3).clone(), c2w, camera.height, camera.width)
    if scales_radius:
        return Trajectory(name, cameras, center, radius * fraction, angle, fraction)
    return Trajectory(name, cameras, center, radius, angle * fraction, fraction)


PathFn = Callable[[float], Tensor]


def shrunk_fraction(path: PathFn, collides: Collides, settings: TrajectorySettings) -> float:
    """The largest ``shrink_factor`` power (down to ``min_fraction``) at which ``path(fraction)`` does not collide."""
    fraction = 1.0
    while settings.shrink_for_collisions and fraction > settings.min_fraction and collides(path(fraction)[:, :3, 3]):
        fraction = max(fraction * settings.shrink_factor, settings.min_fraction)
    return fraction


def _paper_path(name: str, start: Tensor, d: float, settings: TrajectorySettings, t: Tensor):
    """The paper's presets: ``orbit`` (a circle in the image plane) and arcs about the camera's own axes."""
    right, up, forward = start[:3, 0], -start[:3, 1], start[:3, 2]
    center = start[:3, 3] + d * forward
    if name == "orbit":
        radius = settings.orbit_radius_ratio * d

        def orbit(fraction: float) -> Tensor:  # closed ellipse through C in the image plane
            phi = 2 * math.pi * t[:, None]
            rx, ry = fraction * radius, fraction * radius * settings.orbit_aspect
            eyes = start[:3, 3] + rx * (torch.cos(phi) - 1) * right + ry * torch.sin(phi) * up
            return look_at(eyes, center, up)

        return orbit, center, radius, 360.0, True
    axis, angle = {"up": (-right, settings.up_deg), "right": (up, settings.right_deg),
                   "left": (-up, settings.left_deg)}[name]
    return _arc(start, center, axis, angle, t), center, d, angle, False


def _release_path(name: str, start: Tensor, d: float, settings: TrajectorySettings, t: Tensor):
    """The released presets: ``eloop`` in the start camera's frame, ``up``/``right``/``left`` about world axes.

    ``eloop``: frame ``i`` at angle ``a = 2 pi i / (N-1)`` sits at ``(rx sin a, ry (cos a - 1), 0)`` in the start
    camera's frame, looking at ``(0, 0, d)`` with the start camera's up. ``up``: a rigid rotation of the start
    pose about the horizontal axis through ``P = C + up_radius_ratio d h`` (``h`` the horizontal forward), the
    camera rising. ``right``/``left``: a rigid rotation about the vertical through ``c = C + d forward``.
    """
    release = settings.release
    up, forward = -start[:3, 1], start[:3, 2]
    eye = start[:3, 3]
    center = eye + d * forward
    if name == "eloop":
        rx, ry = release.eloop_rx_ratio * d, release.eloop_ry_ratio * d

        def eloop(fraction: float) -> Tensor:
            a = 2 * math.pi * t
            local = torch.stack([fraction * rx * torch.sin(a), fraction * ry * (torch.cos(a) - 1), torch.zeros_like(a)], -1)
            return look_at(eye + local @ start[:3, :3].T, center, up)

        return eloop, center, rx, 360.0, True
    vertical = world_vertical(start)
    if name == "up":
        horizontal = torch.nn.functional.normalize(forward - (forward @ vertical) * vertical, dim=0)
        pivot = eye + release.up_radius_ratio * d * horizontal
        axis = torch.linalg.cross(vertical, horizontal, dim=0)
        return _arc(start, pivot, axis, release.up_deg, t), pivot, release.up_radius_ratio * d, release.up_deg, False
    axis = vertical if name == "right" else -vertical
    return _arc(start, center, axis, release.turn_deg, t), center, d, release.turn_deg, False


def _arc(start: Tensor, center: Tensor, axis: Tensor, angle: float, t: Tensor) -> PathFn:
    """The start pose rotated rigidly about ``axis`` through ``center`` by ``fraction * angle * t`` degrees."""

    def path(fraction: float) -> Tensor:
        rotations = rotation_about_axis(axis, torch.deg2rad(fraction * angle * t))
        c2w = start.expand(len(t), 4, 4).clone()
        c2w[:, :3, :3] = rotations @ start[:3, :3]
        c2w[:, :3, 3] = center + rotations @ (start[:3, 3] - center)
        return c2w

    return path


def world_vertical(c2w: Tensor) -> Tensor:
    """World up ``[3]``: the signed world axis nearest the camera's up (its ``-y`` column).

    Gravity-aligned worlds are axis-aligned (the release's OpenCV worlds are y-down, panoramas z-up), so a
    camera pitched or rolled by less than 45 degrees finds its world's vertical.
    """
    up = -c2w[:3, 1]
    axis = int(up.abs().argmax())
    vertical = torch.zeros_like(up)
    vertical[axis] = torch.sign(up[axis])
    return vertical


def custom_trajectory(name: str, input_camera: Camera, waypoints: Tensor, num_frames: int) -> Trajectory:
    """A user path through camera-to-world ``waypoints [W,4,4]``, resampled to ``num_frames`` cameras.

    The path starts at the input camera (the video model's first frame is the input image): it is
    put in front of the waypoints unless the first one already is that pose. Between consecutive
    waypoints the position moves linearly and the rotation along the shortest arc, each segment
    taking the same number of frames; every frame keeps the input intrinsics. No collision
    shrinking: the path is taken as given.
    """
    if len(input_camera) != 1:
        raise InvalidInputError(f"a custom path starts from one input camera, got {len(input_camera)}")
    if num_frames < 2:
        raise InvalidInputError("a trajectory needs at least two frames")
    waypoints = waypoints.to(input_camera.c2w)
    if waypoints.ndim != 3 or waypoints.shape[1:] != (4, 4) or len(waypoints) == 0:
        raise InvalidInputError(f"waypoints must be [W,4,4] camera-to-world poses, got {tuple(waypoints.shape)}")
    _check_rigid(waypoints)
    if len(waypoints) == 1 and torch.allclose(waypoints[0], input_camera.c2w[0], atol=1e-6):
        raise InvalidInputError(f"custom path {name!r} never leaves the input camera")
    return waypoint_trajectory(name, input_camera, waypoints, num_frames)


def waypoint_trajectory(name: str, input_camera: Camera, waypoints: Tensor, num_frames: int) -> Trajectory:
    """The path of :func:`custom_trajectory` through rigid ``waypoints [W,4,4]`` (at least one besides the start)."""
    waypoints = waypoints.to(input_camera.c2w)
    start = input_camera.c2w[0]
    if not torch.allclose(waypoints[0], start, atol=1e-6):
        waypoints = torch.cat([start[None], waypoints])
    t = torch.linspace(0, len(waypoints) - 1, num_frames, dtype=waypoints.dtype, device=waypoints.device)
    t = torch.where((t - t.round()).abs() < 1e-9, t.round(), t)
    segment = t.floor().long().clamp(max=len(waypoints) - 2)
    s = t - segment
    quaternions = rotation_to_quaternion(waypoints[:, :3, :3]).to(waypoints)
    c2w = torch.eye(4, dtype=waypoints.dtype, device=waypoints.device).repeat(num_frames, 1, 1)
    c2w[:, :3, :3] = quaternion_to_rotation(slerp(quaternions[segment], quaternions[segment + 1], s))
    c2w[:, :3, 3] = torch.lerp(waypoints[segment, :3, 3], waypoints[segment + 1, :3, 3], s[:, None])
    on_waypoint = s == 0  # frames that land on a waypoint are that pose exactly (81 poses -> every 4th of 21)
    c2w[on_waypoint] = waypoints[segment[on_waypoint]]
    c2w[0], c2w[-1] = start, waypoints[-1]
    K = input_camera.K.expand(num_frames, 3, 3).clone()
    return Trajectory(name, Camera(K, c2w, input_camera.height, input_camera.width))


class _CollisionTest:
    """Whether camera positions (all but the first) enter the scene seen by the input view or the 3D cache."""

    def __init__(
        self,
        camera: Camera,
        d: float,
        depth: Tensor | None,
        cache_points: Tensor | None,
        settings: TrajectorySettings,
    ) -> None:
        self.camera, self.points, self.chunk = camera, cache_points, settings.collision_chunk
        self.depth = None if depth is None else depth.to(camera.K)
        self.margin = settings.surface_margin * d
        self.clearance = settings.clearance * d
        if self.depth is not None:
            self.surface, self.normals = _tangent_planes(camera, self.depth)
        if cache_points is not None and len(cache_points) > 0:
            own = self._nearest_distance(camera.centers)[0].item()
            self.clearance = min(self.clearance, 0.5 * own)

    def __call__(self, eyes: Tensor) -> bool:
        eyes = eyes[1:]
        return self._behind_surface(eyes) or self._too_close(eyes)

    def _behind_surface(self, eyes: Tensor) -> bool:
        if self.depth is None:
            return False
        h, w = self.depth.shape
        w2c, K = self.camera.w2c[0], self.camera.K[0]
        x, y, z = (eyes @ w2c[:3, :3].T + w2c[:3, 3]).unbind(-1)
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        safe_z = torch.where(z > 0, z, torch.ones_like(z))
        u, v = fx * x / safe_z + cx, fy * y / safe_z + cy
        seen = (z > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        # elsewhere: the border pixel in the direction of the lateral offset
        du, dv = fx * x, fy * y
        reach_u = torch.where(du > 0, (w - 0.5 - cx) / du, torch.where(du < 0, (cx - 0.5) / -du, math.inf))
        reach_v = torch.where(dv > 0, (h - 0.5 - cy) / dv, torch.where(dv < 0, (cy - 0.5) / -dv, math.inf))
        reach = torch.minimum(reach_u, reach_v).nan_to_num(posinf=0.0)
        col = torch.where(seen, u, cx + reach * du).clamp(0, w - 1).long()
        row = torch.where(seen, v, cy + reach * dv).clamp(0, h - 1).long()
        depth, surface, normal = self.depth[row, col], self.surface[row, col], self.normals[row, col]
        inside = seen & torch.isfinite(depth) & (depth > 0) & (z >= depth - self.margin)
        side = ((eyes - surface) * normal).sum(dim=-1)  # signed distance to the extended tangent plane
        beyond = ~seen & torch.isfinite(side) & (side < self.margin)
        return bool((inside | beyond).any())

    def _too_close(self, eyes: Tensor) -> bool:
        if self.points is None or len(self.points) == 0:
            return False
        return bool((self._nearest_distance(eyes) < self.clearance).any())

    def _nearest_distance(self, eyes: Tensor) -> Tensor:
        points = self.points.to(eyes)
        nearest = torch.full((len(eyes),), math.inf, dtype=eyes.dtype, device=eyes.device)
        for start in range(0, len(points), self.chunk):
            block = points[start : start + self.chunk]
            nearest = torch.minimum(nearest, torch.cdist(eyes, block).amin(dim=1))
        return nearest


def _tangent_planes(camera: Camera, depth: Tensor) -> tuple[Tensor, Tensor]:
    """Surface points ``[H,W,3]`` and unit normals facing the camera ``[H,W,3]`` (NaN where unknown).

    Normals are central differences of the back-projected depth map over a 2%-of-size stencil.
    """
    h, w = depth.shape
    valid = torch.isfinite(depth) & (depth > 0)
    points = camera.backproject(torch.where(valid, depth, torch.zeros_like(depth))[None])[0]
    points = torch.where(valid[..., None], points, torch.full_like(points, math.nan))
    k = max(1, round(0.02 * max(h, w)))
    rows, cols = torch.arange(h, device=depth.device), torch.arange(w, device=depth.device)
    right, left = (cols + k).clamp(max=w - 1), (cols - k).clamp(min=0)
    down, up = (rows + k).clamp(max=h - 1), (rows - k).clamp(min=0)
    tangent_u = points[:, right] - points[:, left]
    tangent_v = points[down] - points[up]
    normals = torch.nn.functional.normalize(torch.linalg.cross(tangent_u, tangent_v, dim=-1), dim=-1)
    facing = ((camera.centers[0] - points) * normals).sum(dim=-1, keepdim=True)
    return points, torch.where(facing < 0, -normals, normals)


def load_trajectory_json(data: Mapping[str, Any] | str | bytes) -> Trajectory:
    """A custom path from ``camera.json``-style data (a dict or its JSON text).

    Keys: ``w2c`` or ``extrinsics`` (OpenCV world-to-camera ``[F,4,4]``), ``K`` or ``intrinsics``
    (``[F,3,3]`` or one shared ``[3,3]``), ``height``, ``width``; optionally ``name``, ``center``,
    ``radius``, ``angle_deg``, ``fraction`` as written by ``trajectory_to_json``.
    """
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"trajectory JSON does not parse: {exc}") from exc
    if not isinstance(data, Mapping):
        raise InvalidInputError("trajectory JSON must be an object")
    w2c = _tensor_field(data, ("w2c", "extrinsics"), 3, (4, 4))
    K = _tensor_field(data, ("K", "intrinsics"), 2, (3, 3))
    K = K.expand(len(w2c), 3, 3).clone() if K.ndim == 2 else K
    if len(K) != len(w2c) or len(w2c) == 0:
        raise InvalidInputError(f"{len(w2c)} extrinsics but {len(K)} intrinsics")
    _check_rigid(w2c)
    try:
        height, width = int(data["height"]), int(data["width"])
        camera = Camera(K, rigid_inverse(w2c), height, width)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInputError(f"trajectory JSON needs a positive height and width: {exc}") from exc
    try:
        center = None if data.get("center") is None else torch.tensor(data["center"], dtype=torch.float64)
        if center is not None and center.shape != (3,):
            raise ValueError(f"center must hold 3 numbers, got shape {tuple(center.shape)}")
        return Trajectory(
            name=str(data.get("name", "custom")),
            cameras=camera,
            center=center,
            radius=float(data.get("radius", 0.0)),
            angle_deg=float(data.get("angle_deg", 0.0)),
            fraction=float(data.get("fraction", 1.0)),
        )
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"trajectory JSON has a malformed parameter: {exc}") from exc


def trajectory_to_json(trajectory: Trajectory) -> dict[str, Any]:
    """JSON-ready dict in the ``camera.json`` convention (OpenCV w2c extrinsics and intrinsics per frame)."""
    cameras = trajectory.cameras.to("cpu", torch.float64)
    return {
        "name": trajectory.name,
        "height": cameras.height,
        "width": cameras.width,
        "w2c": cameras.w2c.tolist(),
        "intrinsics": cameras.K.tolist(),
        "center": None if trajectory.center is None else trajectory.center.double().cpu().tolist(),
        "radius": trajectory.radius,
        "angle_deg": trajectory.angle_deg,
        "fraction": trajectory.fraction,
    }


def _tensor_field(data: Mapping[str, Any], keys: tuple[str, ...], min_ndim: int, shape: tuple[int, int]) -> Tensor:
    key = next((k for k in keys if k in data), None)
    if key is None:
        raise InvalidInputError(f"trajectory JSON needs one of {keys}")
    try:
        value = torch.tensor(data[key], dtype=torch.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{key!r} is not a numeric array: {exc}") from exc
    if value.ndim not in (min_ndim, 3) or tuple(value.shape[-2:]) != shape or not torch.isfinite(value).all():
        raise InvalidInputError(f"{key!r} must be finite [F,{shape[0]},{shape[1]}], got {tuple(value.shape)}")
    return value


def _check_rigid(w2c: Tensor, tol: float = 1e-4) -> None:
    R = w2c[:, :3, :3]
    eye = torch.eye(3, dtype=w2c.dtype)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=w2c.dtype)
    if (
        (R @ R.transpose(1, 2) - eye).abs().amax() > tol
        or (torch.linalg.det(R) - 1).abs().amax() > tol
        or (w2c[:, 3] - bottom).abs().amax() > tol
    ):
        raise InvalidInputError("extrinsics must be rigid transforms (orthonormal rotation, det +1, last row 0 0 0 1)")


def rotation_about_axis(axis: Tensor, angles: Tensor) -> Tensor:
    """Rodrigues rotations ``[N,3,3]`` by ``angles`` (radians, ``[N]``) about the unit ``axis`` ``[3]``."""
    k = torch.nn.functional.normalize(axis, dim=0)
    zero = torch.zeros((), dtype=k.dtype, device=k.device)
    cross = torch.stack(
        [torch.stack([zero, -k[2], k[1]]), torch.stack([k[2], zero, -k[0]]), torch.stack([-k[1], k[0], zero])]
    )
    s, c = torch.sin(angles)[:, None, None], torch.cos(angles)[:, None, None]
    eye = torch.eye(3, dtype=k.dtype, device=k.device)
    return eye + s * cross + (1 - c) * (cross @ cross)
