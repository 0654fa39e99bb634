"""Pinhole cameras in the OpenCV convention (x right, y down, z forward), always batched."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from worldstereo.errors import InvalidInputError


@dataclass(frozen=True)
class Camera:
    """``N`` pinhole cameras sharing one image size.

    ``K`` is ``[N,3,3]`` (pixels; pixel centres at integer + 0.5), ``c2w`` is ``[N,4,4]``.
    """

    K: Tensor
    c2w: Tensor
    height: int
    width: int

    def __post_init__(self) -> None:
        if self.K.ndim != 3 or self.K.shape[-2:] != (3, 3):
            raise ValueError(f"K must be [N,3,3], got {tuple(self.K.shape)}")
        if self.c2w.ndim != 3 or self.c2w.shape[-2:] != (4, 4):
            raise ValueError(f"c2w must be [N,4,4], got {tuple(self.c2w.shape)}")
        if self.K.shape[0] != self.c2w.shape[0]:
            raise ValueError("K and c2w must hold the same number of cameras")
        if self.height <= 0 or self.width <= 0:
            raise ValueError("image size must be positive")

    # --- construction -------------------------------------------------------------------------
    @staticmethod
    def intrinsics(fx: float, fy: float, cx: float, cy: float, *, dtype=torch.float64) -> Tensor:
        """A single ``[3,3]`` intrinsic matrix."""
        return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=dtype)

    @classmethod
    def from_fov(
        cls, c2w: Tensor, height: int, width: int, fov_x_deg: float, fov_y_deg: float | None = None
    ) -> Camera:
        """Centred principal point; ``fov_y`` defaults to square pixels."""
        c2w = c2w if c2w.ndim == 3 else c2w[None]
        fx = 0.5 * width / math.tan(math.radians(fov_x_deg) / 2)
        fy = fx if fov_y_deg is None else 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)
        K = cls.intrinsics(fx, fy, width / 2, height / 2, dtype=c2w.dtype).to(c2w.device)
        return cls(K.expand(c2w.shape[0], 3, 3).clone(), c2w, height, width)

    @classmethod
    def cat(cls, cameras: list[Camera]) -> Camera:
        """Concatenate batches of the same image size."""
        sizes = {(c.height, c.width) for c in cameras}
        if len(sizes) != 1:
            raise ValueError(f"cannot concatenate cameras of sizes {sorted(sizes)}")
        h, w = sizes.pop()
        return cls(torch.cat([c.K for c in cameras]), torch.cat([c.c2w for c in cameras]), h, w)

    # --- views --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.K.shape[0]

    def __getitem__(self, index: int | slice | Tensor) -> Camera:
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return Camera(self.K[index], self.c2w[index], self.height, self.width)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Camera:
        return Camera(self.K.to(device, dtype), self.c2w.to(device, dtype), self.height, self.width)

    def resized(self, height: int, width: int) -> Camera:
        """The same cameras for the image resampled to ``height x width``: pixel edges map to pixel edges (x' = s x)."""
        if height <= 0 or width <= 0:
            raise InvalidInputError(f"image size must be positive, got {height}x{width}")
        scale = torch.tensor([width / self.width, height / self.height, 1.0], dtype=self.dtype, device=self.device)
        return Camera(self.K * scale[:, None], self.c2w, height, width)

    def cropped(self, top: int, left: int, height: int, width: int) -> Camera:
        """The same cameras for the window ``[top, top+height) x [left, left+width)`` of the image (x' = x - left)."""
        if top < 0 or left < 0 or height <= 0 or width <= 0 or top + height > self.height or left + width > self.width:
            raise InvalidInputError(
                f"crop ({top}, {left}, {height}, {width}) does not fit in a {self.height}x{self.width} image"
            )
        K = self.K.clone()
        K[:, 0, 2] -= left
        K[:, 1, 2] -= top
        return Camera(K, self.c2w, height, width)

    @property
    def device(self) -> torch.device:
        return self.K.device

    @property
    def dtype(self) -> torch.dtype:
        return self.K.dtype

    @property
    def w2c(self) -> Tensor:
        """World-to-camera ``[N,4,4]`` (rigid inverse)."""
        return rigid_inverse(self.c2w)

    @property
    def centers(self) -> Tensor:
        """Camera centres in world coordinates ``[N,3]``."""
        return self.c2w[:, :3, 3]

    @property
    def forward(self) -> Tensor:
        """Optical axes (+z of the camera) in world coordinates ``[N,3]``."""
        return self.c2w[:, :3, 2]

    # --- maths --------------------------------------------------------------------------------
    def pixel_grid(self) -> Tensor:
        """Homogeneous pixel centres ``[H,W,3]`` (x + 0.5, y + 0.5, 1)."""
        ys, xs = torch.meshgrid(
            torch.arange(self.height, device=self.device, dtype=self.dtype) + 0.5,
            torch.arange(self.width, device=self.device, dtype=self.dtype) + 0.5,
            indexing="ij",
        )
        return torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)

    def ray_directions(self) -> Tensor:
        """World-space ray directions with unit z in camera space, ``[N,H,W,3]``: R K⁻¹ x̂."""
        rk = self.c2w[:, :3, :3] @ torch.linalg.inv(self.K)
        xs = torch.arange(self.width, device=self.device, dtype=self.dtype) + 0.5
        ys = torch.arange(self.height, device=self.device, dtype=self.dtype) + 0.5
        across = xs[None, :, None] * rk[:, None, :, 0]  # [N,W,3]: x̂ = (x, y, 1) splits into a column term
        down = torch.addcmul(rk[:, None, :, 2], ys[None, :, None], rk[:, None, :, 1])  # and a row term, [N,H,3]
        return down[:, :, None, :] + across[:, None, :, :]

    def backproject(self, depth: Tensor) -> Tensor:
        """World points ``[N,H,W,3]`` from z-depth ``[N,H,W]``."""  # Eq. 1: X = R D K⁻¹ x̂ + t
        if depth.shape != (len(self), self.height, self.width):
            raise ValueError(f"depth must be {(len(self), self.height, self.width)}, got {tuple(depth.shape)}")
        rays = self.ray_directions().to(torch.promote_types(self.dtype, depth.dtype))
        return rays.mul_(depth[..., None]).add_(self.centers[:, None, None, :])  # in place, the values of R D K⁻¹ x̂ + t

    def project(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Project world points ``[P,3]`` into every camera: pixel coords ``[N,P,2]`` and z-depth ``[N,P]``."""
        w2c = self.w2c
        cam = torch.einsum("nij,pj->npi", w2c[:, :3, :3], points) + w2c[:, None, :3, 3]
        z = cam[..., 2]
        pix = torch.einsum("nij,npj->npi", self.K, cam)
        safe_z = torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)
        return pix[..., :2] / safe_z[..., None], z


def rigid_inverse(T: Tensor) -> Tensor:
    """Inverse of rigid ``[...,4,4]`` transforms without a general matrix inverse."""
    R = T[..., :3, :3]
    t = T[..., :3, 3:]
    out = torch.zeros_like(T)
    out[..., :3, :3] = R.transpose(-1, -2)
    out[..., :3, 3:] = -R.transpose(-1, -2) @ t
    out[..., 3, 3] = 1
    return out


def look_at(eye: Tensor, target: Tensor, up: Tensor) -> Tensor:
    """OpenCV c2w ``[...,4,4]`` at ``eye`` looking at ``target``; ``up`` is the world up (image y points against it)."""
    eye, target, up = torch.broadcast_tensors(eye, target, up)
    z = torch.nn.functional.normalize(target - eye, dim=-1)
    x = torch.nn.functional.normalize(torch.linalg.cross(z, up, dim=-1), dim=-1)
    y = torch.linalg.cross(z, x, dim=-1)
    T = torch.zeros(*eye.shape[:-1], 4, 4, dtype=eye.dtype, device=eye.device)
    T[..., :3, 0], T[..., :3, 1], T[..., :3, 2], T[..., :3, 3] = x, y, z, eye
    T[..., 3, 3] = 1
    return T
