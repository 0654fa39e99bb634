"""Weights from local directories in diffusers' layout, dtype/device handling, and CPU offload.

A component directory holds ``config.json`` and ``diffusion_pytorch_model.safetensors`` (or shards listed in
``diffusion_pytorch_model.safetensors.index.json``): exactly what ``ModelMixin.save_pretrained`` writes. The
model is built directly in the target dtype on the target device (weight init skipped) and the safetensors
are streamed into it tensor by tensor, so peak memory is one copy of the model. Parameters the class keeps in
float32 (``_keep_in_fp32_modules``) stay float32.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from diffusers.models.modeling_utils import ModelMixin, no_init_weights
from safetensors import safe_open
from torch import nn

from worldstereo.errors import ConfigurationError

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = f"{WEIGHTS_NAME}.index.json"


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def keeps_fp32(cls: type[ModelMixin], name: str) -> bool:
    """diffusers' rule: a parameter stays float32 if a path component names one of the class's fp32 modules."""
    return any(module in name.split(".") for module in cls._keep_in_fp32_modules or ())


def build(
    cls: type[ModelMixin], config: dict, *, dtype: torch.dtype, device: torch.device | str, initialise: bool = True
) -> ModelMixin:
    """``cls.from_config(config)`` created in ``dtype`` on ``device``; fp32-kept parameters in float32."""
    with torch.device(device), _default_dtype(dtype):
        if initialise:
            model = cls.from_config(config)
        else:
            with no_init_weights():
                model = cls.from_config(config)
    for name, parameter in model.named_parameters():
        if keeps_fp32(cls, name):
            parameter.data = parameter.data.float()
    return model.eval().requires_grad_(False)


def weight_files(directory: Path) -> list[Path]:
    """The safetensors file, or every shard named by the index, of a component directory."""
    index = directory / INDEX_NAME
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [directory / shard for shard in shards]
    return [directory / WEIGHTS_NAME]


def require_component(directory: Path, what: str, setting: str) -> None:
    """A usable component directory, or a :class:`ConfigurationError` that says what to configure."""
    missing = [p.name for p in [directory / "config.json", *weight_files(directory)] if not p.is_file()]
    if not directory.is_dir() or missing:
        found = "does not exist" if not directory.is_dir() else f"lacks {', '.join(missing)}"
        raise ConfigurationError(
            f"{what} not found: {directory} {found}. Set {setting} to a local directory in diffusers' layout "
            "(config.json + diffusion_pytorch_model.safetensors); nothing is ever downloaded."
        )


def stream_weights(
    targets: dict[str, torch.Tensor], path: Path, owner: str, hint: str = "", ignored: Sequence[str] = ()
) -> set[str]:
    """Copy every tensor of the safetensors file ``path`` into ``targets`` (a state dict, strict): an unknown
    key or a shape mismatch raises :class:`ConfigurationError` naming the file, ``owner`` and ``hint``."""
    patterns = [re.compile(p) for p in ignored]
    loaded: set[str] = set()
    with torch.no_grad(), safe_open(str(path), framework="pt", device="cpu") as tensors:
        for key in tensors.keys():
            if key not in targets:
                if any(p.search(key) for p in patterns):
                    continue
                raise ConfigurationError(f"{path}: unexpected weight {key!r} for {owner}{hint}")
            value = tensors.get_tensor(key)
            if value.shape != targets[key].shape:
                raise ConfigurationError(
                    f"{path}: {key} has shape {tuple(value.shape)}, {owner} expects {tuple(targets[key].shape)}{hint}"
                )
            targets[key].copy_(value)
            loaded.add(key)
    return loaded


def load_component(
    cls: type[ModelMixin], directory: Path, *, dtype: torch.dtype, device: torch.device | str
) -> ModelMixin:
    """Build ``cls`` from ``directory/config.json`` and stream its safetensors weights in (strict)."""
    model = build(cls, cls.load_config(str(directory)), dtype=dtype, device=device, initialise=False)
    targets = model.state_dict()
    loaded: set[str] = set()
    for path in weight_files(directory):
        loaded |= stream_weights(targets, path, cls.__name__, ignored=cls._keys_to_ignore_on_load_unexpected or ())
    missing = sorted(set(targets) - loaded)
    if missing:
        raise ConfigurationError(f"{directory}: {len(missing)} weights of {cls.__name__} missing, e.g. {missing[0]}")
    return model


class Placement:
    """Where components run. Without offload everything lives on ``device``; with offload only the component in
    use does (the previous one goes back to CPU), like diffusers' model CPU offload."""

    def __init__(self, device: torch.device | str, offload: bool, components: Sequence[nn.Module]) -> None:
        self.device = torch.device(device)
        self.offload = offload
        self._components = list(components)
        self._active: nn.Module | None = None
        home = torch.device("cpu") if offload else self.device
        for component in self._components:
            component.to(home)

    def use(self, component: nn.Module) -> None:
        """Put ``component`` on the execution device (parking the previous one when offloading)."""
        if not self.offload or component is self._active:
            return
        if self._active is not None:
            self._active.to("cpu")
        component.to(self.device)
        self._active = component

    def park(self) -> None:
        """With offload, return every component to CPU."""
        if self.offload and self._active is not None:
            self._active.to("cpu")
            self._active = None
