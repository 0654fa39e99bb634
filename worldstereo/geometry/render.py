"""3D cache rendering: splat a coloured point cloud into many cameras with a nearest-point z-test.

A point lands in the pixel that contains its projection (pixel ``i`` spans ``[i, i+1)``) and covers
that pixel plus a footprint of offsets around it; where several points cover a pixel the nearest
(smallest z-depth) wins, ties going to the lower point index.

The z-test is one ``scatter_reduce("amin")`` of packed int64 keys per camera chunk. The high 32 bits
of a key hold the float32 bits of ``near - z``, the low 32 bits the point index. For points beyond
the near plane ``near - z < 0``: as integers these keys are negative and ordered by (depth, index).
Points at or in front of the near plane get non-negative keys; the empty value (high word -1, low
word ``P``) beats them and loses to every valid key, and its index names an all-zero colour row, so
holes decode without masking. Points outside the image are clamped into a border ring that is
cropped away, so no compaction is needed.
Splatting a footprint equals a min filter of the per-pixel key image over that footprint, so the
scatter runs once per point whatever the radius.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from worldstereo.errors import InvalidInputError
from worldstereo.geometry.camera import Camera

Footprint = Literal["square", "disc"]

DEFAULT_EDGE_THRESHOLD = 0.12
"""Sobel magnitude of [0,1]-normalised disparity above which a pixel is a depth edge (exp(-10 g) < 0.3)."""

_HIGH, _LOW = (1, 0) if sys.byteorder == "little" else (0, 1)
_MAX_PADDED_PIXELS = 2**24  # linear pixel indices are formed exactly in float32
_MAX_POINTS = 2**32


@dataclass(frozen=True)
class CacheRender:
    """The 3D cache seen from ``N`` cameras.

    ``rgb [N,H,W,C]`` is the colour of the winning point (input colour dtype), ``depth [N,H,W]`` its
    float32 z-depth; both are 0 in holes. ``mask [N,H,W]`` is the HOLE mask: True where no point
    landed, False where the cache was rendered (``covered`` is its complement).
    """

    rgb: Tensor
    depth: Tensor
    mask: Tensor

    @property
    def covered(self) -> Tensor:
        """True where a point was rendered."""
        return ~self.mask


def splat_offsets(radius: int, footprint: Footprint = "square") -> tuple[tuple[int, int], ...]:
    """Pixel offsets ``(dy, dx)`` a point covers: ``max(|dy|,|dx|) <= r`` (square) or ``dy²+dx² <= r²`` (disc)."""
    if radius < 0:
        raise InvalidInputError(f"splat radius must be >= 0, got {radius}")
    if footprint not in ("square", "disc"):
        raise InvalidInputError(f"footprint must be 'square' or 'disc', got {footprint!r}")
    span = range(-radius, radius + 1)
    return tuple(
        (dy, dx) for dy in span for dx in span if footprint == "square" or dy * dy + dx * dx <= radius * radius
    )


def compress_far_depth(depth: Tensor, m: Tensor | float) -> Tensor:
    """Depth beyond ``m > 0`` pulled in smoothly: continuous and C¹ at ``m``, increasing, bounded by ``2m``."""
    m = torch.as_tensor(m, dtype=depth.dtype, device=depth.device)
    return torch.where(depth > m, 2 * m - m * m / depth, depth)  # d' = 2m - m²/d for d > m


def depth_edge_mask(depth: Tensor, threshold: float = DEFAULT_EDGE_THRESHOLD) -> Tensor:
    """True on depth discontinuities of ``depth [N,H,W]``; drop these pixels before back-projection.

    Disparity (0 where depth is missing, non-positive or infinite) is normalised to [0,1] per frame;
    a pixel is an edge where the magnitude of its Sobel gradient (replicate border) exceeds ``threshold``.
    """
    if depth.ndim != 3:
        raise InvalidInputError(f"depth must be [N,H,W], got {tuple(depth.shape)}")
    depth = depth.to(torch.promote_types(depth.dtype, torch.float32))
    valid = torch.isfinite(depth) & (depth > 0)
    disparity = torch.where(valid, 1 / depth, 0)
    lo = disparity.amin(dim=(1, 2), keepdim=True)
    span = (disparity.amax(dim=(1, 2), keepdim=True) - lo).clamp_min(torch.finfo(depth.dtype).tiny)
    normalized = F.pad(((disparity - lo) / span)[:, None], (1, 1, 1, 1), mode="replicate")
    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=depth.dtype, device=depth.device)
    kernels = torch.stack([sobel_x, sobel_x.T])[:, None]
    gradient = F.conv2d(normalized, kernels)
    return gradient.square().sum(dim=1) > threshold * threshold


@torch.no_grad()
def render_points(
    points: Tensor,
    colors: Tensor,
    cameras: Camera,
    *,
    radius: int = 1,
    footprint: Footprint = "square",
    near: float = 1e-3,
    far_compress: float | None = None,
    chunk_points: int = 1 << 18,
    chunk_cameras: int = 8,
) -> CacheRender:
    """Render ``points [P,3]`` with ``colors [P,C]`` into every camera (on the points' device).

    ``radius`` is the splat radius in pixels (0: one pixel; 1: 3x3 square or 5-pixel disc). Points
    with z-depth below ``near`` are not drawn. With ``far_compress`` set, each frame's depth is
    passed through :func:`compress_far_depth` with ``m = far_compress x`` its median rendered depth.
    Memory is bounded by ``chunk_cameras x chunk_points`` work items plus ``chunk_cameras`` key images.
    """
    _check_cloud(points, colors)
    offsets = splat_offsets(radius, footprint)
    if near <= 0:
        raise InvalidInputError(f"near must be positive, got {near}")
    if chunk_points <= 0 or chunk_cameras <= 0:
        raise InvalidInputError("chunk sizes must be positive")
    device = points.device
    cameras, colors = cameras.to(device=device), colors.to(device)
    n, h, w = len(cameras), cameras.height, cameras.width
    pad = radius + 1  # border ring: in-reach pixels plus one clamp bin per side
    hp, wp = h + 2 * pad, w + 2 * pad
    if hp * wp > _MAX_PADDED_PIXELS:
        raise InvalidInputError(f"frames of {h}x{w} pixels are too large to render (limit about 16 Mpx)")
    num_points = points.shape[0]

    rgb = colors.new_zeros((n, h, w, colors.shape[1]))
    depth = torch.zeros((n, h, w), dtype=torch.float32, device=device)
    hole = torch.ones((n, h, w), dtype=torch.bool, device=device)
    if num_points and n:
        projections = _pixel_projections(cameras, pad, near)
        palette = torch.cat([colors, colors.new_zeros((1, colors.shape[1]))])  # row P: hole colour
        empty = num_points - 2**32
        xyz = points.detach().to(torch.float32).T.contiguous()
        passes = _separable(offsets) if footprint == "square" else (offsets,)
        block = _Block(min(chunk_cameras, n), min(chunk_points, num_points), device)
        zbuffer = torch.empty((min(chunk_cameras, n), hp * wp), dtype=torch.int64, device=device)
        for c0 in range(0, n, chunk_cameras):
            frames = slice(c0, min(c0 + chunk_cameras, n))
            keys = zbuffer[: frames.stop - c0].fill_(empty)
            for p0 in range(0, num_points, chunk_points):
                block.scatter(xyz[:, p0 : p0 + chunk_points], p0, projections[frames], near, (hp, wp), keys)
            image = keys.view(-1, hp, wp)
            for step in passes:
                image = _min_filter(image, step)
            _decode(image[:, pad : pad + h, pad : pad + w], empty, palette, near, rgb[frames], depth[frames], hole[frames])
    if far_compress is not None:
        median = depth.masked_fill(hole, float("nan")).flatten(1).nanmedian(dim=1).values
        depth = compress_far_depth(depth, (far_compress * median)[:, None, None])
    return CacheRender(rgb, depth, hole)


def render_points_naive(
    points: Tensor,
    colors: Tensor,
    cameras: Camera,
    *,
    radius: int = 1,
    footprint: Footprint = "square",
    near: float = 1e-3,
) -> CacheRender:
    """Reference z-buffer in numpy, one frame at a time: paint splats far to near, the last write wins.

    Same conventions as :func:`render_points` (float64 projection); a correctness oracle and the
    benchmark baseline.
    """
    _check_cloud(points, colors)
    offsets = np.array(splat_offsets(radius, footprint))
    n, h, w = len(cameras), cameras.height, cameras.width
    xyz = points.detach().cpu().to(torch.float64).numpy()
    palette = colors.detach().cpu().numpy()
    w2c = cameras.w2c.detach().cpu().to(torch.float64).numpy()
    K = cameras.K.detach().cpu().to(torch.float64).numpy()
    rgb = np.zeros((n, h * w, palette.shape[1]), dtype=palette.dtype)
    depth = np.zeros((n, h * w), dtype=np.float32)
    winner = np.full((n, h * w), -1, dtype=np.int64)
    for i in range(n):
        cam = xyz @ w2c[i, :3, :3].T + w2c[i, :3, 3]
        ids = np.flatnonzero(cam[:, 2] > near)
        pix = cam[ids] @ K[i].T
        u = np.floor(pix[:, 0] / pix[:, 2]).astype(np.int64)
        v = np.floor(pix[:, 1] / pix[:, 2]).astype(np.int64)
        order = np.argsort(cam[ids, 2], kind="stable")[::-1]  # far to near; equal depths: lower index last
        ids, u, v = ids[order], u[order], v[order]
        # every splat pixel of a point follows the point's place in the order
        us = (u[:, None] + offsets[None, :, 1]).ravel()
        vs = (v[:, None] + offsets[None, :, 0]).ravel()
        owners = np.repeat(ids, len(offsets))
        inside = (us >= 0) & (us < w) & (vs >= 0) & (vs < h)
        pixel = (vs * w + us)[inside]
        winner[i, pixel] = owners[inside]
        depth[i, pixel] = cam[winner[i, pixel], 2]
        rgb[i, pixel] = palette[winner[i, pixel]]
    hole = winner < 0
    return CacheRender(
        torch.from_numpy(rgb.reshape(n, h, w, -1)),
        torch.from_numpy(depth.reshape(n, h, w)),
        torch.from_numpy(hole.reshape(n, h, w)),
    )


def _check_cloud(points: Tensor, colors: Tensor) -> None:
    if points.ndim != 2 or points.shape[1] != 3:
        raise InvalidInputError(f"points must be [P,3], got {tuple(points.shape)}")
    if colors.ndim != 2 or colors.shape[0] != points.shape[0]:
        raise InvalidInputError(f"colors must be [P,C] with P={points.shape[0]}, got {tuple(colors.shape)}")
    if points.shape[0] >= _MAX_POINTS:
        raise InvalidInputError(f"at most {_MAX_POINTS - 1} points can be rendered at once")
    if not bool(torch.isfinite(points).all()):
        raise InvalidInputError("points must be finite")


def _pixel_projections(cameras: Camera, pad: int, near: float) -> Tensor:
    """Rows ``-u z``, ``-v z`` and ``near - z`` of every camera as affine maps of world points, ``[N,3,4]`` float32.

    ``u, v`` are padded pixel coordinates (principal point shifted by ``pad``).
    """
    K = cameras.K.clone()
    K[:, :2, 2] += pad
    rows = -(K @ cameras.w2c[:, :3, :])
    rows[:, 2, 3] += near
    return rows.to(torch.float32)


class _Block:
    """Reusable buffers for one ``cameras x points`` block of the scatter."""

    def __init__(self, cameras: int, points: int, device: torch.device) -> None:
        self.coords = torch.empty((3, cameras * points), dtype=torch.float32, device=device)
        self.linear = torch.empty(cameras * points, dtype=torch.int64, device=device)
        self.packed = torch.empty((cameras * points, 2), dtype=torch.int32, device=device)
        self.indexed: tuple[int, int, int] | None = None

    def scatter(
        self, xyz: Tensor, first: int, projections: Tensor, near: float, padded: tuple[int, int], keys: Tensor
    ) -> None:
        """Project ``xyz [3,p]`` (point ids from ``first``) and fold their keys into ``keys [c, Hp*Wp]``."""
        c, p = projections.shape[0], xyz.shape[1]
        hp, wp = padded
        u, v, inverse = (buffer[: c * p].view(c, p) for buffer in self.coords)
        packed = self.packed[: c * p].view(c, p, 2)
        if self.indexed != (first, c, p):
            packed[..., _LOW].copy_(torch.arange(first, first + p, device=xyz.device))
            self.indexed = (first, c, p)
        ahead = packed[..., _HIGH].view(torch.float32)  # near - z, computed in place as the key's high word
        for out, row in zip((u, v, ahead), projections.unbind(1)):
            torch.mul(row[:, 0:1], xyz[0], out=out)
            out.addcmul_(row[:, 1:2], xyz[1]).addcmul_(row[:, 2:3], xyz[2]).add_(row[:, 3:4])
        torch.clamp(ahead, max=0, out=inverse).sub_(near).reciprocal_()  # -1 / max(z, near)
        u.mul_(inverse).clamp_(0, wp - 1).floor_()
        v.mul_(inverse).clamp_(0, hp - 1).floor_()
        linear = self.linear[: c * p].view(c, p)
        linear.copy_(u.add_(v, alpha=wp))
        keys.scatter_reduce_(1, linear, packed.view(torch.int64).view(c, p), "amin")


def _separable(offsets: tuple[tuple[int, int], ...]) -> tuple[tuple[tuple[int, int], ...], ...]:
    """A square footprint as a horizontal then a vertical segment (its Minkowski factors)."""
    return tuple((dy, dx) for dy, dx in offsets if dy == 0), tuple((dy, dx) for dy, dx in offsets if dx == 0)


def _min_filter(image: Tensor, offsets: tuple[tuple[int, int], ...]) -> Tensor:
    """Pixel ``q`` of the result is the min of ``image[q - o]`` over ``offsets`` (a point at ``p`` covers ``p + o``)."""
    shifts = [(dy, dx) for dy, dx in offsets if (dy, dx) != (0, 0)]
    if not shifts:
        return image
    out = image.clone()
    hp, wp = image.shape[-2:]
    for dy, dx in shifts:
        target = out[..., max(dy, 0) : hp + min(dy, 0), max(dx, 0) : wp + min(dx, 0)]
        target.clamp_max_(image[..., max(-dy, 0) : hp + min(-dy, 0), max(-dx, 0) : wp + min(-dx, 0)])
    return out


def _decode(
    keys: Tensor, empty: int, palette: Tensor, near: float, rgb: Tensor, depth: Tensor, hole: Tensor
) -> None:
    """Unpack winning keys ``[c,H,W]`` into colour, depth and hole mask (written in place)."""
    torch.ge(keys, empty, out=hole)
    torch.index_select(palette, 0, keys.bitwise_and(0xFFFFFFFF).reshape(-1), out=rgb.view(-1, palette.shape[1]))
    ahead = keys.bitwise_right_shift(32).to(torch.int32).view(torch.float32)  # near - z; NaN in holes
    torch.sub(ahead, near, out=depth).neg_().nan_to_num_(nan=0.0)
