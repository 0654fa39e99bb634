"""3D Gaussians as gsplat's parameter dict (``means scales quats opacities sh0 shN``), initialised from a cloud."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

SH_C0 = 0.28209479177387814  # the degree-0 spherical harmonic, 1 / (2 sqrt(pi))
KEYS = ("means", "scales", "quats", "opacities", "sh0", "shN")


def sh_coefficients(degree: int) -> int:
    """Coefficients per colour channel of spherical harmonics up to ``degree``."""
    return (degree + 1) ** 2


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    """DC coefficient of a colour in [0, 1] (the colour is ``SH_C0 * dc + 0.5``)."""
    return (rgb - 0.5) / SH_C0


def neighbour_distance(points: Tensor, k: int = 3, pairs_per_chunk: int = 1 << 24) -> Tensor:
    """Root mean square distance of each point to its ``k`` nearest other points, ``[N]`` (chunked ``cdist``)."""
    if len(points) <= k:
        raise ValueError(f"need more than {k} points, got {len(points)}")
    rows = max(1, pairs_per_chunk // len(points))
    out = []
    for chunk in points.split(rows):
        nearest = torch.cdist(chunk, points).topk(k + 1, dim=1, largest=False).values[:, 1:]  # the first is itself
        out.append(nearest.square().mean(1).sqrt())
    return torch.cat(out)


def from_cloud(points: Tensor, colors: Tensor, sh_degree: int, opacity: float = 0.1,
               neighbours: int = 3) -> nn.ParameterDict:
    """Isotropic Gaussians at the cloud's points: DC colour, scale = the neighbour distance, one opacity."""
    points, colors = points.float(), colors.float().clamp(0, 1)
    count = len(points)
    scale = neighbour_distance(points, neighbours).clamp_min(1e-7)
    quats = torch.zeros(count, 4, device=points.device)
    quats[:, 0] = 1.0
    return nn.ParameterDict({
        "means": nn.Parameter(points.clone()),
        "scales": nn.Parameter(scale.log()[:, None].repeat(1, 3)),
        "quats": nn.Parameter(quats),
        "opacities": nn.Parameter(torch.full((count,), math.log(opacity / (1 - opacity)), device=points.device)),
        "sh0": nn.Parameter(rgb_to_sh0(colors)[:, None, :]),
        "shN": nn.Parameter(torch.zeros(count, sh_coefficients(sh_degree) - 1, 3, device=points.device)),
    })


# real spherical harmonics of degrees 1-3 (the 3DGS reference constants)
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
       1.445305721320277, -0.5900435899266435)


def sh_basis(dirs: Tensor, degree: int) -> Tensor:
    """Real SH basis ``[N, (degree+1)^2]`` at unit directions ``[N,3]`` (degree <= 3)."""
    x, y, z = dirs.unbind(-1)
    basis = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        basis += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        basis += [_C2[0] * xy, _C2[1] * yz, _C2[2] * (2 * zz - xx - yy), _C2[3] * xz, _C2[4] * (xx - yy)]
    if degree >= 3:
        basis += [_C3[0] * y * (3 * xx - yy), _C3[1] * xy * z, _C3[2] * y * (4 * zz - xx - yy),
                  _C3[3] * z * (2 * zz - 3 * xx - 3 * yy), _C3[4] * x * (4 * zz - xx - yy),
                  _C3[5] * z * (xx - yy), _C3[6] * x * (xx - 3 * yy)]
    return torch.stack(basis, -1)


def sh_colors(coeffs: Tensor, dirs: Tensor, degree: int) -> Tensor:
    """Colours ``[N,3]`` of SH coefficients ``[N,K,3]`` seen along ``dirs`` ``[N,3]``, degrees up to ``degree``."""
    count = sh_coefficients(degree)
    basis = sh_basis(torch.nn.functional.normalize(dirs, dim=-1), degree)
    return (basis[:, :, None] * coeffs[:, :count]).sum(1).add(0.5).clamp_min(0.0)
