"""A Gaussian rasterizer in plain torch (CPU, or any device): EWA projection, front-to-back
alpha compositing of depth-sorted (Gaussian, pixel) pairs, autograd for the backward pass. gsplat's CUDA rasterizer
computes the same image; this one makes the splat stage run where gsplat's kernels cannot."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from worldstereo.splat.gaussians import sh_colors

T_MIN = 1e-4  # compositing stops behind this transmittance (gsplat)
NEAR = 0.01
BLUR = 0.3  # px^2 added to every projected covariance (gsplat's eps2d)
ALPHA_MIN, ALPHA_MAX = 1.0 / 255.0, 0.99
FRUSTUM_MARGIN = 1.3  # the Jacobian is taken at points clamped to 1.3x the field of view (3DGS)


def quat_scale_to_covariance(quats: Tensor, scales: Tensor) -> Tensor:
    """World covariances ``[N,3,3]``: Sigma = R S S^T R^T (3DGS Eq. 6), quaternions ``wxyz``."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    rot = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).view(-1, 3, 3)
    m = rot * scales[:, None, :]
    return m @ m.transpose(1, 2)


def project(means: Tensor, covariances: Tensor, viewmat: Tensor, K: Tensor, width: int, height: int
            ) -> tuple[Tensor, Tensor, Tensor]:
    """Pixel means ``[N,2]``, image covariances ``[N,2,2]`` (with the blur) and z-depths ``[N]``:
    Sigma' = J W Sigma W^T J^T (3DGS Eq. 5)."""
    rot, trans = viewmat[:3, :3], viewmat[:3, 3]
    cam = means @ rot.T + trans
    z = cam[:, 2]
    safe_z = z.clamp_min(NEAR)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    lim_x = FRUSTUM_MARGIN * torch.maximum(cx, width - cx) / fx
    lim_y = FRUSTUM_MARGIN * torch.maximum(cy, height - cy) / fy
    tx = (cam[:, 0] / safe_z).clamp(-lim_x, lim_x) * safe_z
    ty = (cam[:, 1] / safe_z).clamp(-lim_y, lim_y) * safe_z
    zeros = torch.zeros_like(z)
    jac = torch.stack([fx / safe_z, zeros, -fx * tx / safe_z**2,
                       zeros, fy / safe_z, -fy * ty / safe_z**2], -1).view(-1, 2, 3)
    jw = jac @ rot
    cov2d = jw @ covariances @ jw.transpose(1, 2) + BLUR * torch.eye(2, device=means.device, dtype=means.dtype)
    means2d = torch.stack([fx * cam[:, 0] / safe_z + cx, fy * cam[:, 1] / safe_z + cy], -1)
    return means2d, cov2d, z


def _pixel_pairs(means2d: Tensor, radii: Tensor, visible: Tensor, width: int, height: int
                 ) -> tuple[Tensor, Tensor]:
    """(gaussian id, pixel id) of every pixel inside a visible Gaussian's bounding box, ``[P]`` each."""
    lo = (means2d - radii).floor().long()
    hi = (means2d + radii).floor().long()
    lo[:, 0].clamp_(0, width - 1), lo[:, 1].clamp_(0, height - 1)
    hi[:, 0].clamp_(-1, width - 1), hi[:, 1].clamp_(-1, height - 1)
    span = (hi - lo + 1).clamp_min(0)
    counts = torch.where(visible, span[:, 0] * span[:, 1], 0)
    ids = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    local = torch.arange(len(ids), device=ids.device) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    px = lo[ids, 0] + local % span[ids, 0]
    py = lo[ids, 1] + local // span[ids, 0]
    return ids, py * width + px


def _alphas(means2d: Tensor, conic: Tensor, opacities: Tensor, ids: Tensor, pixels: Tensor, width: int) -> Tensor:
    """alpha = opacity x exp(-power) at the pixel centres (3DGS Eq. 4), capped at ``ALPHA_MAX``, 0 below
    ``ALPHA_MIN``."""
    centre = torch.stack([pixels % width, pixels // width], -1).to(means2d) + 0.5
    delta = centre - means2d[ids]
    q = conic[ids]
    power = 0.5 * (q[:, 0] * delta[:, 0] ** 2 + q[:, 2] * delta[:, 1] ** 2) + q[:, 1] * delta[:, 0] * delta[:, 1]
    alpha = (opacities[ids] * torch.exp(-power)).clamp_max(ALPHA_MAX)
    return alpha * ((alpha >= ALPHA_MIN) & (power >= 0))


def _transmittance(alpha: Tensor, pixels: Tensor) -> Tensor:
    """T_i = prod_{j<i} (1 - alpha_j) within each pixel's depth-sorted run (3DGS Eq. 3): exp of a running sum
    of log(1 - alpha) less its value at the run's start (the running sum in float64)."""
    log_keep = torch.log1p(-alpha).double()
    before = log_keep.cumsum(0) - log_keep
    first = torch.ones_like(pixels, dtype=torch.bool)
    first[1:] = pixels[1:] != pixels[:-1]
    run_start = torch.cummax(torch.where(first, torch.arange(len(pixels), device=pixels.device), 0), 0).values
    return torch.exp(before - before[run_start]).to(alpha.dtype)


def rasterize_torch(params: dict[str, Tensor], viewmat: Tensor, K: Tensor, width: int, height: int,
                    sh_degree: int, background: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, dict]:
    """Colour ``[H,W,3]``, accumulated depth ``[H,W]`` (sum of weight x z), alpha ``[H,W]`` and gsplat's
    ``info`` (``means2d`` ``[1,N,2]``, ``radii`` ``[1,N,2]``) for one OpenCV camera (w2c ``viewmat``).

    Every (Gaussian, pixel) pair of the Gaussians' bounding boxes is sorted by pixel then depth; a first pass
    without gradients drops the pairs below ``ALPHA_MIN`` and those behind a transmittance of ``T_MIN`` (where
    gsplat stops), the second composites the rest with autograd."""
    means, opacities = params["means"], torch.sigmoid(params["opacities"])
    covariances = quat_scale_to_covariance(params["quats"], torch.exp(params["scales"]))
    means2d, cov2d, z = project(means, covariances, viewmat, K, width, height)
    batched = means2d[None]  # info["means2d"]: the strategy reads its gradient, so everything below uses it
    means2d = batched[0]
    a, b, c = cov2d[:, 0, 0], cov2d[:, 0, 1], cov2d[:, 1, 1]
    det = (a * c - b * b).clamp_min(1e-12)
    conic = torch.stack([c / det, -b / det, a / det], -1)  # the inverse covariance's (xx, xy, yy)
    # where opacity x exp(-r^2 / 2 sigma^2) falls below ALPHA_MIN: at most 3 sigma
    reach = (2 * torch.log(opacities.detach() / ALPHA_MIN).clamp_min(0)).sqrt().clamp_max(3.0)
    radii = (reach[:, None] * torch.stack([a, c], -1).detach().sqrt()).ceil()
    visible = ((z > NEAR) & (means2d + radii > 0).all(-1) & (means2d[:, 0] - radii[:, 0] < width)
               & (means2d[:, 1] - radii[:, 1] < height)).detach()
    ids, pixels = _pixel_pairs(means2d.detach(), radii, visible, width, height)
    with torch.no_grad():
        alpha = _alphas(means2d, conic, opacities, ids, pixels, width)
        hit = alpha > 0
        ids, pixels = ids[hit], pixels[hit]
        depth_rank = torch.empty(len(z), dtype=torch.long, device=z.device)
        depth_rank[z.argsort()] = torch.arange(len(z), device=z.device)
        order = (pixels * len(z) + depth_rank[ids]).argsort()
        ids, pixels = ids[order], pixels[order]
        kept = _transmittance(alpha[hit][order], pixels) >= T_MIN
        ids, pixels = ids[kept], pixels[kept]
    alpha = _alphas(means2d, conic, opacities, ids, pixels, width)
    weights = alpha * _transmittance(alpha, pixels)

    colors = sh_colors(torch.cat([params["sh0"], params["shN"]], 1), means - viewmat_center(viewmat), sh_degree)
    values = torch.cat([colors, z[:, None], torch.ones_like(z[:, None])], -1)  # rgb, z, 1 per Gaussian
    image = torch.zeros(height * width, 5, device=means.device, dtype=means.dtype)
    image = image.index_add(0, pixels, weights[:, None] * values[ids]).view(height, width, 5)
    rgb, depth, acc = image[..., :3], image[..., 3], image[..., 4]
    if background is not None:
        rgb = rgb + (1 - acc[..., None]) * background
    info = {"means2d": batched, "radii": torch.where(visible[:, None], radii, 0).int()[None],
            "width": width, "height": height, "n_cameras": 1, "gaussian_ids": None}
    return rgb, depth, acc, info


def viewmat_center(viewmat: Tensor) -> Tensor:
    """Camera centre in world coordinates of a w2c matrix: -R^T t."""
    return -viewmat[:3, :3].T @ viewmat[:3, 3]
