"""Splats as the standard 3DGS PLY (what gsplat, nerfstudio, SuperSplat and viser read) and back."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from worldstereo.geometry.ply import ply_bytes, read_ply


def splat_columns(params: dict[str, Tensor]) -> dict[str, np.ndarray]:
    """``x y z nx ny nz f_dc_0..2 f_rest_* opacity scale_0..2 rot_0..3`` as float32 columns; ``f_rest`` is
    channel-major (all of red's coefficients, then green's, then blue's), rotations are unit ``wxyz``."""
    def numpy(t: Tensor) -> np.ndarray:
        return t.detach().to("cpu", torch.float32).numpy()

    means = numpy(params["means"])
    rest = numpy(params["shN"].transpose(1, 2).flatten(1))  # [N, 3*(K-1)]
    quats = numpy(torch.nn.functional.normalize(params["quats"].detach(), dim=-1))
    columns = {axis: means[:, i] for i, axis in enumerate("xyz")}
    columns |= {name: np.zeros(len(means), np.float32) for name in ("nx", "ny", "nz")}
    columns |= {f"f_dc_{i}": numpy(params["sh0"][:, 0, i]) for i in range(3)}
    columns |= {f"f_rest_{i}": rest[:, i] for i in range(rest.shape[1])}
    columns["opacity"] = numpy(params["opacities"])
    columns |= {f"scale_{i}": numpy(params["scales"][:, i]) for i in range(3)}
    columns |= {f"rot_{i}": quats[:, i] for i in range(4)}
    return {name: np.ascontiguousarray(values) for name, values in columns.items()}


def splats_ply(params: dict[str, Tensor]) -> bytes:
    """The binary PLY of :func:`splat_columns`."""
    return ply_bytes(splat_columns(params), comment="worldstereo 3D Gaussian splats")


def read_splats_ply(data: bytes) -> dict[str, Tensor]:
    """gsplat's parameter layout (``means scales quats opacities sh0 shN``) of a 3DGS PLY."""
    columns = read_ply(data)

    def stack(names: list[str]) -> Tensor:
        return torch.from_numpy(np.stack([columns[n] for n in names], 1).astype(np.float32))

    rest = sorted((n for n in columns if n.startswith("f_rest_")), key=lambda n: int(n.rsplit("_", 1)[1]))
    sh_n = stack(rest).view(len(columns["x"]), 3, -1).transpose(1, 2) if rest else torch.zeros(len(columns["x"]), 0, 3)
    return {"means": stack(["x", "y", "z"]), "scales": stack([f"scale_{i}" for i in range(3)]),
            "quats": stack([f"rot_{i}" for i in range(4)]), "opacities": torch.from_numpy(columns["opacity"].copy()),
            "sh0": stack([f"f_dc_{i}" for i in range(3)])[:, None, :], "shN": sh_n.contiguous()}
