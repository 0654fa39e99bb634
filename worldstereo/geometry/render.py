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
from worldstereo.geometry.far_depth import compress_far_depth, far_limits

Footprint = Literal["square", "disc"]

DEFAULT_EDGE_THRESHOLD = 0.12
"""Sobel magnitude of [0,1]-normalised disparity above which a pixel is a depth edge (exp(-10 g) < 0.3)."""

_HIGH, _LOW = (1, 0) if sys.byteorder == "little" else (0, 1)
_MAX_PADDED_PIXELS = 2**31 - 1  # linear pixel indices are formed in int32
_MAX_POINTS = 2**31 - 1  # the hole colour row P is an int32 index
_BLOCK_CAMERAS = 4  # cameras projected per pass over a point chunk


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
    chunk_points: int = 1 << 16,
    chunk_cameras: int = 8,
) -> CacheRender:
    """Render ``points [P,3]`` with ``colors [P,C]`` into every camera (on the points' device).

    ``radius`` is the splat radius in pixels (0: one pixel; 1: 3x3 square or 5-pixel disc). Points
    at or in front of the ``near`` plane are not drawn. With ``far_compress`` set, each frame's depth
    is passed through :func:`compress_far_depth` with ``m = far_compress x`` its median rendered depth.
    Working memory besides the outputs: about 32 bytes per point of a ``chunk_points`` chunk and
    camera of a 4-camera block, and three int64 key images per camera of a ``chunk_cameras`` chunk.
    Projections run in float32 on coordinates centred on the cloud; clouds in scan order (as
    back-projected from depth maps) scatter with far better memory locality than shuffled ones.
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
        raise InvalidInputError(f"frames of {h}x{w} pixels are too large to render (limit 2 Gpx)")
    num_points = points.shape[0]
    if num_points == 0 or n == 0:
        depth = torch.zeros((n, h, w), dtype=torch.float32, device=device)
        return CacheRender(colors.new_zeros((n, h, w, colors.shape[1])), depth, depth == 0)

    rgb = colors.new_empty((n, h, w, colors.shape[1]))  # every pixel is decoded
    depth = torch.empty((n, h, w), dtype=torch.float32, device=device)
    hole = torch.empty((n, h, w), dtype=torch.bool, device=device)
    origin = points.detach().mean(dim=0)  # float32 maths in coordinates centred on the cloud
    projections = _pixel_projections(cameras, pad, near, origin)
    palette = torch.cat([colors, colors.new_zeros((1, colors.shape[1]))])  # [P+1, C]; row P: holes
    empty = num_points - 2**32
    xyz = torch.ones((4, num_points), dtype=torch.float32, device=device)  # homogeneous, relative to origin
    torch.sub(points.detach().T, origin[:, None], out=xyz[:3])
    passes = _separable(offsets) if footprint == "square" and radius > 0 else (offsets,)
    block = _Block(min(_BLOCK_CAMERAS, chunk_cameras, n), min(chunk_points, num_points), device)
    zbuffer = torch.empty((min(chunk_cameras, n), hp * wp), dtype=torch.int64, device=device)
    scratch = [torch.empty_like(zbuffer) for _ in passes]
    for c0 in range(0, n, chunk_cameras):
        frames = slice(c0, min(c0 + chunk_cameras, n))
        keys = zbuffer[: frames.stop - c0].fill_(empty)
        for p0 in range(0, num_points, chunk_points):
            block.index(p0, min(chunk_points, num_points - p0))
            for b0 in range(0, len(keys), block.cameras):
                group = slice(b0, b0 + block.cameras)
                block.scatter(xyz[:, p0 : p0 + chunk_points], projections[frames][group], near, (hp, wp), keys[group])
        image = keys.view(-1, hp, wp)
        if len(passes) == 2:  # vertical pass keeps the rows the horizontal one reaches
            image = _min_filter(image, passes[0], (h, wp), scratch[0])
        image = _min_filter(image, passes[-1], (h, w), scratch[-1])
        _decode(image, empty, palette, near, rgb[frames], depth[frames], hole[frames])
    if far_compress is not None:
        depth = compress_far_depth(depth, far_limits(depth, far_compress, ~hole)[:, None, None])
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
    if points.shape[0] > _MAX_POINTS:
        raise InvalidInputError(f"at most {_MAX_POINTS} points can be rendered at once")
    if not bool(torch.isfinite(points.sum(dtype=torch.float64))):
        raise InvalidInputError("points must be finite")


def _pixel_projections(cameras: Camera, pad: int, near: float, origin: Tensor) -> Tensor:
    """Rows ``-u z``, ``-v z`` and ``near - z`` of every camera as affine maps of ``X - origin``, ``[N,3,4]`` float32.

    ``u, v`` are padded pixel coordinates (principal point shifted by ``pad``).
    """
    K = cameras.K.clone()
    K[:, :2, 2] += pad
    w2c = cameras.w2c[:, :3, :].clone()
    w2c[:, :, 3] += w2c[:, :, :3] @ origin.to(w2c.dtype)
    rows = -(K @ w2c)
    rows[:, 2, 3] += near
    return rows.to(torch.float32)


class _Block:
    """Reusable buffers for projecting one chunk of points into a few cameras at once."""

    def __init__(self, cameras: int, points: int, device: torch.device) -> None:
        self.cameras = cameras
        self.rows = torch.empty(cameras * 3 * points, dtype=torch.float32, device=device)
        self.pixels = torch.empty(cameras * 2 * points, dtype=torch.int32, device=device)
        self.depth = torch.empty(cameras * points, dtype=torch.float32, device=device)
        self.packed = torch.empty((cameras, points, 2), dtype=torch.int32, device=device)

    def index(self, first: int, count: int) -> None:
        """Low key words: the ids of the ``count`` points from ``first``, the same for every camera."""
        self.packed[:, :count, _LOW] = torch.arange(first, first + count, device=self.packed.device)

    def scatter(
        self, xyz: Tensor, projections: Tensor, near: float, padded: tuple[int, int], keys: Tensor
    ) -> None:
        """Project homogeneous ``xyz [4,p]`` into ``c`` cameras; fold their keys into ``keys [c, Hp*Wp]``."""
        c, p = projections.shape[0], xyz.shape[1]
        hp, wp = padded
        packed = self.packed[:c, :p]
        rows = self.rows[: c * 3 * p].view(c, 3, p)  # -u z, -v z, near - z
        torch.mm(projections.reshape(c * 3, 4), xyz, out=rows.view(c * 3, p))
        uv, ahead = rows[:, :2], rows[:, 2]
        packed[..., _HIGH] = ahead.view(torch.int32)
        depth = self.depth[: c * p].view(c, 1, p)
        uv.div_(torch.clamp(ahead[:, None], max=0, out=depth).sub_(near))  # by -max(z, near)
        uv[:, 0].clamp_(0, wp - 1)
        uv[:, 1].clamp_(0, hp - 1)
        pixels = self.pixels[: c * 2 * p].view(c, 2, p)
        pixels.copy_(uv)  # truncation is floor on non-negative values
        column, row = pixels.unbind(1)
        keys.scatter_reduce_(1, column.add_(row, alpha=wp), packed.view(torch.int64)[..., 0], "amin")


def _separable(offsets: tuple[tuple[int, int], ...]) -> tuple[tuple[tuple[int, int], ...], ...]:
    """A square footprint as a vertical then a horizontal segment (its Minkowski factors)."""
    return tuple((dy, dx) for dy, dx in offsets if dx == 0), tuple((dy, dx) for dy, dx in offsets if dy == 0)


def _min_filter(image: Tensor, offsets: tuple[tuple[int, int], ...], crop: tuple[int, int], buffer: Tensor) -> Tensor:
    """``out[q] = min over offsets o of image[q + m - o]`` on a window ``crop`` smaller by margins ``m``.

    A point at ``p`` covers ``p + o``; the margins centre the window. The result is a contiguous
    view of ``buffer``.
    """
    height, width = crop
    top, left = (image.shape[-2] - height) // 2, (image.shape[-1] - width) // 2
    out = buffer.view(-1)[: image.shape[0] * height * width].view(-1, height, width)
    views = [image[..., top - dy : top - dy + height, left - dx : left - dx + width] for dy, dx in offsets]
    if len(views) == 1:
        return out.copy_(views[0])
    torch.minimum(views[0], views[1], out=out)
    for view in views[2:]:
        out.clamp_max_(view)
    return out


def _decode(
    keys: Tensor, empty: int, palette: Tensor, near: float, rgb: Tensor, depth: Tensor, hole: Tensor
) -> None:
    """Unpack winning keys ``[c,H,W]`` into colour, depth and hole mask (written in place)."""
    torch.ge(keys, empty, out=hole)
    words = keys.view(torch.int32).view(-1, 2)
    index = words[:, _LOW].contiguous()
    torch.index_select(palette, 0, index, out=rgb.view(-1, palette.shape[1]))
    ahead = words[:, _HIGH].view(torch.float32).view(keys.shape)  # near - z; NaN in holes
    torch.sub(torch.tensor(near, dtype=depth.dtype), ahead, out=depth).nan_to_num_(nan=0.0)
