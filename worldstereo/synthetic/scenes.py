"""Procedural ground-truth scenes in a z-up world, rendered exactly by vectorised ray casting.

``room`` is an interior box room with furniture and pictures, ``object`` a few objects on a ground
rectangle in front of a backdrop (rays above it hit nothing), ``panorama360`` a closed room around the
origin for equirectangular panoramas. Layouts and materials are deterministic functions of the seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from worldstereo.errors import InvalidInputError
from worldstereo.geometry.camera import Camera, look_at
from worldstereo.geometry.spherical import WORLD_UP, equirect_directions
from worldstereo.synthetic.primitives import Boxes, Cylinders, Geometry, Spheres
from worldstereo.synthetic.textures import BACKGROUND, Appearance, Material

SceneKind = Literal["room", "object", "panorama360"]
SCENE_KINDS: tuple[SceneKind, ...] = ("room", "object", "panorama360")
INPUT_FOV_X_DEG = 65.0
DEFAULT_CHUNK = 1 << 16  # rays cast at once

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class RenderedViews:
    rgb: Tensor  # [N,H,W,3] float32 in [0,1]
    depth: Tensor  # [N,H,W] float64 z-depth, inf where empty


@dataclass(frozen=True, eq=False)
class SyntheticScene:
    """Analytic primitives with procedural materials, and the default input view ``eye → target``."""

    name: str
    kind: SceneKind
    seed: int
    geometry: Geometry = field(repr=False)
    appearance: Appearance = field(repr=False)
    eye: Vec3
    target: Vec3
    free_space: tuple[Vec3, Vec3]  # the box a camera explores: the room's inside, the object's side of the backdrop

    def cast(self, origins: Tensor, directions: Tensor) -> tuple[Tensor, Tensor]:
        """Closest hits of rays ``[R,3]``: ray parameter ``[R]`` (``inf`` on a miss) and primitive id ``[R]`` (-1)."""
        return self.geometry.to(origins.device, origins.dtype).cast(origins, directions)

    def normals_at(self, points: Tensor, primitive_ids: Tensor) -> Tensor:
        """Unit normals ``[M,3]`` of surface points, facing the side the primitive is seen from."""
        return self.geometry.to(points.device, points.dtype).normals(points, primitive_ids)

    def colors_at(self, points: Tensor, primitive_ids: Tensor) -> Tensor:
        """RGB ``[M,3]`` float32 of surface points on ``primitive_ids``; id -1 gives the background colour."""
        colors = torch.tensor(BACKGROUND, dtype=torch.float32, device=points.device).repeat(len(points), 1)
        hit = primitive_ids >= 0
        if hit.any():
            p, ids = points[hit], primitive_ids[hit]
            colors[hit] = self.appearance.colors(p, ids, self.normals_at(p, ids))
        return colors

    def _trace(self, origins: Tensor, directions: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
        """Ray parameter ``[R]`` and colour ``[R,3]`` of rays, ``chunk`` rays at a time."""
        t_out = torch.empty(len(origins), dtype=origins.dtype, device=origins.device)
        rgb_out = torch.empty(len(origins), 3, dtype=torch.float32, device=origins.device)
        for start in range(0, len(origins), chunk):
            o, d = origins[start : start + chunk], directions[start : start + chunk]
            t, ids = self.cast(o, d)
            t_out[start : start + chunk] = t
            rgb_out[start : start + chunk] = self.colors_at(o + t.nan_to_num(posinf=0.0)[:, None] * d, ids)
        return t_out, rgb_out

    def render(self, cameras: Camera, chunk: int = DEFAULT_CHUNK) -> RenderedViews:
        """Exact RGB and z-depth (``inf`` where nothing is hit) of every camera, on its device and dtype."""
        n, h, w = len(cameras), cameras.height, cameras.width
        rgb = torch.empty(n, h * w, 3, dtype=torch.float32, device=cameras.device)
        depth = torch.empty(n, h * w, dtype=torch.float64, device=cameras.device)
        for i in range(n):
            directions = cameras[i].ray_directions().reshape(-1, 3)  # unit camera z: ray parameter = z-depth
            origins = cameras.centers[i].expand_as(directions)
            depth[i], rgb[i] = self._trace(origins, directions, chunk)
        return RenderedViews(rgb.reshape(n, h, w, 3), depth.reshape(n, h, w))

    def render_panorama(
        self, height: int, width: int, center: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Equirectangular RGB ``[H,W,3]`` and Euclidean distance ``[H,W]`` from ``center`` (default: origin)."""
        center = torch.zeros(3, dtype=torch.float64) if center is None else center
        directions = equirect_directions(height, width, dtype=center.dtype, device=center.device).reshape(-1, 3)
        distance, rgb = self._trace(center.expand_as(directions), directions, DEFAULT_CHUNK)
        return rgb.reshape(height, width, 3), distance.to(torch.float64).reshape(height, width)

    def surface_points(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """``n`` points ``[n,3]`` float64 uniform by area on visible surfaces, with colours ``[n,3]`` float32.

        Hidden surface is excluded: points inside or touching another primitive's occupied region
        (the floor under a box, a box's base, a picture's back). A room is sampled on its inside.
        """
        generator = torch.Generator().manual_seed(seed)
        areas = self.geometry.areas()
        tolerance = 1e-7 * self.extent
        batch = min(max(2 * n, 1024), 1 << 17)
        points, ids, found = [], [], 0
        while found < n:
            candidate_ids = torch.multinomial(areas, batch, replacement=True, generator=generator)
            candidates = self.geometry.sample(candidate_ids, generator)
            others = self.geometry.signed_distance(candidates).scatter(1, candidate_ids[:, None], math.inf)
            visible = others.amin(1) > tolerance
            points.append(candidates[visible])
            ids.append(candidate_ids[visible])
            found += int(visible.sum())
        points_n, ids_n = torch.cat(points)[:n], torch.cat(ids)[:n]
        return points_n, self.colors_at(points_n, ids_n)

    def input_camera(self, height: int = 480, width: int = 768) -> Camera:
        """The default input view: one pinhole camera at ``eye`` looking at ``target``."""
        eye, target = torch.tensor(self.eye, dtype=torch.float64), torch.tensor(self.target, dtype=torch.float64)
        c2w = look_at(eye, target, torch.tensor(WORLD_UP, dtype=torch.float64))
        return Camera.from_fov(c2w, height, width, INPUT_FOV_X_DEG)

    @property
    def extent(self) -> float:
        """Diagonal of the bounding box of all primitives (metres)."""
        lo, hi = self.geometry.bounds()
        return float((hi - lo).norm())


class _Layout:
    """Primitives and their random materials, accumulated while a scene is laid out."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._boxes: list[tuple[Vec3, Vec3, bool, Material]] = []
        self._spheres: list[tuple[Vec3, float, Material]] = []
        self._cylinders: list[tuple[tuple[float, float], float, float, float, Material]] = []

    def box(self, lo: Vec3, hi: Vec3, *, hollow: bool = False) -> None:
        self._boxes.append((lo, hi, hollow, Material.random(self.rng)))

    def sphere(self, center: Vec3, radius: float) -> None:
        self._spheres.append((center, radius, Material.random(self.rng)))

    def cylinder(self, axis_xy: tuple[float, float], radius: float, z_lo: float, z_hi: float) -> None:
        self._cylinders.append((axis_xy, radius, z_lo, z_hi, Material.random(self.rng)))

    def build(self) -> tuple[Geometry, Appearance]:
        def rows(items: list, column: int, width: int) -> Tensor:
            return torch.tensor([item[column] for item in items], dtype=torch.float64).reshape(-1, width)

        boxes = Boxes(
            lo=rows(self._boxes, 0, 3),
            hi=rows(self._boxes, 1, 3),
            hollow=torch.tensor([b[2] for b in self._boxes], dtype=torch.bool),
        )
        spheres = Spheres(center=rows(self._spheres, 0, 3), radius=rows(self._spheres, 1, 1)[:, 0])
        cylinders = Cylinders(
            axis_xy=rows(self._cylinders, 0, 2),
            radius=rows(self._cylinders, 1, 1)[:, 0],
            z_lo=rows(self._cylinders, 2, 1)[:, 0],
            z_hi=rows(self._cylinders, 3, 1)[:, 0],
        )
        materials = [item[-1] for group in (self._boxes, self._spheres, self._cylinders) for item in group]
        return Geometry(boxes, spheres, cylinders), Appearance.stack(materials)


def _place_object(layout: _Layout, x: float, y: float, floor: float, radius: float) -> None:
    """One object standing on the floor within the footprint disc ``(x, y, radius)``."""
    rng = layout.rng
    angle = rng.uniform(0.5, 1.07)
    half_x, half_y = radius * math.cos(angle), radius * math.sin(angle)
    match int(rng.integers(4)):
        case 0:
            layout.box((x - half_x, y - half_y, floor), (x + half_x, y + half_y, floor + rng.uniform(0.3, 1.1)))
        case 1:
            layout.sphere((x, y, floor + radius), radius)
        case 2:
            layout.cylinder((x, y), 0.8 * radius, floor, floor + rng.uniform(0.4, 1.2))
        case _:
            top = floor + rng.uniform(0.3, 0.7)
            layout.box((x - half_x, y - half_y, floor), (x + half_x, y + half_y, top))
            r = 0.9 * min(half_x, half_y)
            layout.sphere((x, y, top + r), r)


def _furnish(layout: _Layout, lo: Vec3, hi: Vec3, keep_out: list[tuple[float, float, float]], count: int) -> None:
    """Up to ``count`` objects on the floor ``z = lo[z]``, 0.3 m inside the xy extent of ``[lo, hi]``,
    with footprints clear of each other and of the ``keep_out`` discs ``(x, y, radius)``."""
    rng, taken = layout.rng, list(keep_out)
    for _ in range(count):
        for _attempt in range(100):
            radius = rng.uniform(0.25, 0.5)
            x = rng.uniform(lo[0] + 0.3 + radius, hi[0] - 0.3 - radius)
            y = rng.uniform(lo[1] + 0.3 + radius, hi[1] - 0.3 - radius)
            if all(math.hypot(x - tx, y - ty) > radius + tr + 0.1 for tx, ty, tr in taken):
                taken.append((x, y, radius))
                _place_object(layout, x, y, lo[2], radius)
                break


def _hang_pictures(layout: _Layout, lo: Vec3, hi: Vec3) -> None:
    """Thin boxes flat against some of the four walls of the room ``[lo, hi]``."""
    rng = layout.rng
    for axis in (0, 1):
        for wall, inward in ((lo[axis], 0.03), (hi[axis], -0.03)):
            if rng.uniform() < 0.3:
                continue
            along = 1 - axis
            half_w, half_h = rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.45)
            centre = rng.uniform(lo[along] + 0.5 + half_w, hi[along] - 0.5 - half_w)
            z = lo[2] + rng.uniform(1.4, 1.9)
            p_lo, p_hi = [0.0, 0.0, z - half_h], [0.0, 0.0, z + half_h]
            p_lo[along], p_hi[along] = centre - half_w, centre + half_w
            p_lo[axis], p_hi[axis] = sorted((wall, wall + inward))
            layout.box(tuple(p_lo), tuple(p_hi))


def _room(layout: _Layout) -> tuple[Vec3, Vec3]:
    rng = layout.rng
    hx, hy, height = rng.uniform(2.8, 3.2), rng.uniform(2.3, 2.7), rng.uniform(2.8, 3.2)
    lo, hi = (-hx, -hy, 0.0), (hx, hy, height)
    layout.box(lo, hi, hollow=True)
    eye = (-hx + 0.8, -hy + 0.8, 1.55)
    _furnish(layout, lo, hi, [(eye[0], eye[1], 1.0)], int(rng.integers(5, 8)))
    _hang_pictures(layout, lo, hi)
    return eye, (0.4 * hx, 0.3 * hy, 0.8), (lo, hi)


def _object(layout: _Layout) -> tuple[Vec3, Vec3]:
    rng = layout.rng
    layout.box((-4.0, -4.0, 0.0), (4.0, 4.0, 0.0))  # ground
    back, top = rng.uniform(1.9, 2.4), rng.uniform(2.8, 3.4)
    layout.box((-3.6, back, 0.0), (3.6, back, top))  # backdrop
    free = ((-4.0, -4.0, 0.0), (4.0, back, top))
    hx, hy, top = rng.uniform(0.3, 0.45), rng.uniform(0.3, 0.45), rng.uniform(0.3, 0.5)
    layout.box((-hx, -hy, 0.0), (hx, hy, top))  # pedestal
    if rng.uniform() < 0.5:
        r = 0.85 * min(hx, hy)
        layout.sphere((0.0, 0.0, top + r), r)
    else:
        layout.cylinder((0.0, 0.0), 0.8 * min(hx, hy), top, top + rng.uniform(0.3, 0.6))
    _furnish(layout, (-1.9, -1.0, 0.0), (1.9, back + 0.1, 0.0), [(0.0, 0.0, 0.7)], int(rng.integers(2, 4)))
    eye = (rng.uniform(-0.3, 0.3), -rng.uniform(2.3, 2.7), rng.uniform(1.2, 1.45))
    return eye, (0.0, 0.0, 0.45), free


def _panorama360(layout: _Layout) -> tuple[Vec3, Vec3]:
    rng = layout.rng
    lo = (-rng.uniform(2.6, 3.6), -rng.uniform(2.4, 3.2), -rng.uniform(1.4, 1.6))
    hi = (rng.uniform(2.6, 3.6), rng.uniform(2.4, 3.2), rng.uniform(1.3, 1.6))
    layout.box(lo, hi, hollow=True)
    _furnish(layout, lo, hi, [(0.0, 0.0, 1.0)], int(rng.integers(6, 9)))
    _hang_pictures(layout, lo, hi)
    return (0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (lo, hi)


_LAYOUTS = {"room": _room, "object": _object, "panorama360": _panorama360}


def make_scene(kind: str, seed: int = 0) -> SyntheticScene:
    """The scene of ``kind`` laid out from ``seed`` (a non-negative integer)."""
    if kind not in _LAYOUTS:
        raise InvalidInputError(f"unknown scene kind {kind!r}; expected one of {', '.join(SCENE_KINDS)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidInputError(f"scene seed must be a non-negative integer, got {seed!r}")
    layout = _Layout(np.random.default_rng(seed))
    eye, target, free_space = _LAYOUTS[kind](layout)
    geometry, appearance = layout.build()
    return SyntheticScene(f"{kind}-{seed}", kind, seed, geometry, appearance, eye, target,  # type: ignore[arg-type]
                          free_space)
