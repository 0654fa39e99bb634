"""Image fidelity against ground-truth views: PSNR, SSIM and LPIPS.

Images are channel-last ``[..., H, W, C]`` tensors in ``[0, 1]``; every metric returns one value per
image, shaped like the leading dimensions.
"""

from __future__ import annotations

import functools
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from worldstereo.errors import ConfigurationError, InvalidInputError

_PIXELS_PER_CHUNK = 1 << 23  # bounds SSIM's five filtered maps to a few hundred MB


def _check_pair(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape:
        raise InvalidInputError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.ndim < 3:
        raise InvalidInputError(f"images must be [..., H, W, C], got {tuple(a.shape)}")


def _float(x: Tensor) -> Tensor:
    """At least single precision (integer and half inputs are promoted)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def psnr(a: Tensor, b: Tensor, *, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB per image; identical images give ``inf``."""
    _check_pair(a, b)
    mse = (_float(a) - _float(b)).square().mean(dim=(-3, -2, -1))
    return 10.0 * torch.log10(data_range**2 / mse)


def gaussian_window(size: int, sigma: float, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Normalised 1D Gaussian ``[size]`` centred on the middle tap."""
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def ssim(
    a: Tensor,
    b: Tensor,
    *,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    """Structural similarity (Wang et al. 2004) per image, averaged over channels.

    Local statistics use a separable Gaussian window (11 taps, sigma 1.5) over the valid region
    only (no padding), with C1 = (k1 L)^2 and C2 = (k2 L)^2, L = ``data_range``; population
    (biased) variances as in the reference implementation.
    """
    _check_pair(a, b)
    *lead, h, w, c = a.shape
    if h < window_size or w < window_size:
        raise InvalidInputError(f"SSIM needs images of at least {window_size}x{window_size}, got {h}x{w}")
    x = _float(a).reshape(-1, h, w, c).permute(0, 3, 1, 2).reshape(-1, 1, h, w)
    y = _float(b).reshape(-1, h, w, c).permute(0, 3, 1, 2).reshape(-1, 1, h, w).to(x.dtype)
    g = gaussian_window(window_size, sigma, dtype=x.dtype, device=x.device)
    g_rows, g_cols = g.view(1, 1, -1, 1).expand(5, 1, -1, 1), g.view(1, 1, 1, -1).expand(5, 1, 1, -1)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    chunk = max(1, _PIXELS_PER_CHUNK // (h * w))
    per_plane = []
    for xs, ys in zip(x.split(chunk), y.split(chunk)):
        stats = torch.cat([xs, ys, xs * xs, ys * ys, xs * ys], dim=1)
        mu_x, mu_y, e_xx, e_yy, e_xy = F.conv2d(F.conv2d(stats, g_rows, groups=5), g_cols, groups=5).unbind(1)
        var_x, var_y, cov = e_xx - mu_x**2, e_yy - mu_y**2, e_xy - mu_x * mu_y
        num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
        den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
        per_plane.append((num / den).mean(dim=(-2, -1)))
    return torch.cat(per_plane).view(-1, c).mean(-1).view(lead)


# --- LPIPS (Zhang et al. 2018) --------------------------------------------------------------------

# Feature layers as ("conv", in, out, kernel, stride, padding) / ("relu",) / ("pool", kernel); indices
# match the classic layer numbering of AlexNet / VGG16 ``features`` so their state dicts load unchanged.
_ALEX_LAYERS = (
    ("conv", 3, 64, 11, 4, 2), ("relu",), ("pool", 3),
    ("conv", 64, 192, 5, 1, 2), ("relu",), ("pool", 3),
    ("conv", 192, 384, 3, 1, 1), ("relu",),
    ("conv", 384, 256, 3, 1, 1), ("relu",),
    ("conv", 256, 256, 3, 1, 1), ("relu",),
)  # fmt: skip
_VGG16_WIDTHS = (64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512)  # 0 = pool


def _vgg16_layers() -> tuple[tuple, ...]:
    layers: list[tuple] = []
    channels = 3
    for width in _VGG16_WIDTHS:
        if width == 0:
            layers.append(("pool", 2))
        else:
            layers += [("conv", channels, width, 3, 1, 1), ("relu",)]
            channels = width
    return tuple(layers)


_BACKBONES: dict[str, tuple[tuple[tuple, ...], tuple[int, ...]]] = {
    # layer specs and the indices of the five ReLU outputs LPIPS compares
    "alex": (_ALEX_LAYERS, (1, 4, 7, 9, 11)),
    "vgg": (_vgg16_layers(), (3, 8, 15, 22, 29)),
}

# Key layout of the ``lpips`` package's module state dict (``net.sliceK.I.*``,
# ``linK.model.1.weight`` and its alias ``lins.K.model.1.weight``) mapped onto this module's.
_KEY_ALIASES = (
    (re.compile(r"^net\.slice\d+\.(\d+)\.(weight|bias)$"), r"features.\1.\2"),
    (re.compile(r"^lins?\.?(\d+)\.model\.1\.weight$"), r"lins.\1.weight"),
)


def _layer(spec: tuple) -> nn.Module:
    if spec[0] == "conv":
        _, cin, cout, k, s, p = spec
        return nn.Conv2d(cin, cout, k, stride=s, padding=p)
    if spec[0] == "pool":
        return nn.MaxPool2d(kernel_size=spec[1], stride=2)
    return nn.ReLU()


class LPIPS(nn.Module):
    """Learned perceptual distance: unit-normalised backbone features, squared differences,
    per-layer 1x1 linear heads, spatial mean, sum over five layers.

    ``forward`` takes ``[N,3,H,W]`` images in ``[-1, 1]`` and returns ``[N]`` distances.
    """

    shift: Tensor
    scale: Tensor

    def __init__(self, net: Literal["alex", "vgg"] = "alex") -> None:
        super().__init__()
        if net not in _BACKBONES:
            raise ConfigurationError(f"unknown LPIPS backbone {net!r}; choose one of {sorted(_BACKBONES)}")
        specs, self.taps = _BACKBONES[net]
        self.net_name = net
        self.features = nn.Sequential(*(_layer(s) for s in specs))
        widths = [self.features[i - 1].out_channels for i in self.taps]
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in widths)
        # input scaling constants of the reference release
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)

    def _taps(self, x: Tensor) -> list[Tensor]:
        out = []
        for i, layer in enumerate(self.features[: self.taps[-1] + 1]):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        fx = self._taps((x - self.shift) / self.scale)
        fy = self._taps((y - self.shift) / self.scale)
        total = x.new_zeros(x.shape[0])
        for lin, a, b in zip(self.lins, fx, fy):
            diff = (_unit_channels(a) - _unit_channels(b)).square()
            total = total + lin(diff).mean(dim=(1, 2, 3))
        return total

    def load_weights(self, state: Mapping[str, Tensor]) -> None:
        """Load a state dict in this module's layout or the ``lpips`` package's; extra keys are ignored."""
        wanted = self.state_dict().keys()
        renamed = {}
        for key, value in state.items():
            for pattern, repl in _KEY_ALIASES:
                key = pattern.sub(repl, key)
            if key in wanted:
                renamed[key] = value
        missing = sorted(set(wanted) - renamed.keys())
        if missing:
            raise ConfigurationError(f"LPIPS ({self.net_name}) weights lack {len(missing)} tensors, e.g. {missing[:3]}")
        try:
            self.load_state_dict(renamed)
        except RuntimeError as err:
            raise ConfigurationError(f"LPIPS ({self.net_name}) weights do not fit the network: {err}") from err


def _unit_channels(x: Tensor, eps: float = 1e-10) -> Tensor:
    return x / (x.square().sum(dim=1, keepdim=True).sqrt() + eps)


@functools.lru_cache(maxsize=4)
def load_lpips(weights_path: Path, net: Literal["alex", "vgg"] = "alex") -> LPIPS:
    """An evaluation-mode LPIPS network from a local state dict (``torch.load(weights_only=True)``)."""
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as err:
        raise ConfigurationError(f"cannot read LPIPS weights at {weights_path}: {err}") from err
    if not isinstance(state, Mapping):
        raise ConfigurationError(f"LPIPS weights at {weights_path} are not a state dict")
    model = LPIPS(net)
    model.load_weights(state)
    return model.eval().requires_grad_(False)


def lpips(
    a: Tensor, b: Tensor, weights_path: str | Path | None, *, net: Literal["alex", "vgg"] = "alex"
) -> Tensor:
    """LPIPS distance per image (lower is closer) with weights read from ``weights_path``.

    Nothing is downloaded: the file must hold the LPIPS state dict (this module's layout or
    ``lpips.LPIPS(net=...).state_dict()`` saved with ``torch.save``).
    """
    if weights_path is None or not Path(weights_path).is_file():
        raise ConfigurationError(
            "LPIPS needs local weights: pass the path of a saved LPIPS state dict "
            f"(backbone + linear heads, net={net!r}); got {weights_path!r}"
        )
    _check_pair(a, b)
    *lead, h, w, c = a.shape
    if c != 3:
        raise InvalidInputError(f"LPIPS needs RGB images, got {c} channels")
    model = load_lpips(Path(weights_path).resolve(), net).to(a.device)
    with torch.no_grad():
        return model(_signed_nchw(a), _signed_nchw(b)).view(lead)


def _signed_nchw(images: Tensor) -> Tensor:
    """``[..., H, W, 3]`` in [0, 1] -> float32 ``[N, 3, H, W]`` in [-1, 1]."""
    h, w = images.shape[-3:-1]
    return images.float().reshape(-1, h, w, 3).permute(0, 3, 1, 2) * 2 - 1


__all__ = ["LPIPS", "gaussian_window", "load_lpips", "lpips", "psnr", "ssim"]
