"""Local weight directories in a model hub's layout: the checks that turn a bad setting into a clear reason.

Each model backend names one setting (``WORLDSTEREO_MODELS__*``) that holds a directory as the hub
publishes it (``config.json`` beside ``model.safetensors``). A missing setting, a missing or empty
directory, a missing file or a file of the wrong format fails the scene with a ``ConfigurationError``
that names the setting and what to put there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError

from worldstereo.config import Settings
from worldstereo.errors import ConfigurationError

CONFIG_NAME, WEIGHTS_NAME, PREPROCESSOR_NAME = "config.json", "model.safetensors", "preprocessor_config.json"
# What loading a present but broken checkpoint raises (truncated or foreign safetensors, mismatched shapes).
LOAD_ERRORS = (OSError, ValueError, TypeError, KeyError, RuntimeError, SafetensorError)


@dataclass(frozen=True)
class WeightsSpec:
    """What one backend's weight directory must hold, and where users get it."""

    backend: str  # registry name
    field: str  # attribute of ``Settings.models``
    files: tuple[str, ...]
    checkpoints: str  # hub names users download themselves, with their licences

    @property
    def setting(self) -> str:
        return f"WORLDSTEREO_MODELS__{self.field.upper()}"

    def path(self, settings: Settings) -> Path | None:
        return getattr(settings.models, self.field)

    def directory(self, settings: Settings) -> Path:
        """The configured directory, checked to hold every file; a ``ConfigurationError`` naming the setting if not."""
        path = self.path(settings)
        hint = f"set {self.setting} to a local directory holding {', '.join(self.files)} (e.g. {self.checkpoints})"
        if path is None:
            raise ConfigurationError(f"{self.backend} needs local weights: {hint}")
        if not path.is_dir():
            raise ConfigurationError(f"{self.setting}={path}: no such directory; {hint}")
        missing = [name for name in self.files if not (path / name).is_file() or (path / name).stat().st_size == 0]
        if missing:
            raise ConfigurationError(f"{self.setting}={path}: missing or empty {', '.join(missing)}; {hint}")
        return path

    def config(self, settings: Settings, model_types: tuple[str, ...] = ()) -> tuple[Path, dict]:
        """The checked directory and its parsed ``config.json`` (whose ``model_type``, when given, must match)."""
        path = self.directory(settings)
        config = self.json(path, CONFIG_NAME)
        if model_types and config.get("model_type") not in model_types:
            raise ConfigurationError(
                f"{self.setting}={path}: {CONFIG_NAME} has model_type {config.get('model_type')!r}, expected "
                f"{' or '.join(model_types)}; the directory holds another model ({self.checkpoints})"
            )
        return path, config

    def json(self, path: Path, name: str) -> dict:
        """The JSON object in ``path / name``; ``{}`` when the file is absent."""
        file = path / name
        if not file.is_file():
            return {}
        try:
            document = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigurationError(f"{self.setting}={path}: {name} is not valid JSON ({error})") from None
        if not isinstance(document, dict):
            raise ConfigurationError(f"{self.setting}={path}: {name} is not a JSON object")
        return document

    def status(self, settings: Settings) -> str:
        """``not set``, ``ok: PATH`` or the reason the directory is unusable (for ``worldstereo config``)."""
        if self.path(settings) is None:
            return "not set"
        try:
            return f"ok: {self.directory(settings)}"
        except ConfigurationError as error:
            return f"unusable: {error}"


def load_failure(spec: WeightsSpec, path: Path, error: Exception) -> ConfigurationError:
    """The error for weights that are present but do not load into the backend's model."""
    return ConfigurationError(
        f"{spec.setting}={path}: the weights do not load ({type(error).__name__}: {error}); "
        f"expected {spec.checkpoints}"
    )


def load_pretrained(spec: WeightsSpec, path: Path, model_class, **overrides):
    """A transformers model from the local directory ``path``, every tensor present, in eval mode."""
    try:
        model, info = model_class.from_pretrained(path, local_files_only=True, output_loading_info=True, **overrides)
    except LOAD_ERRORS as error:
        raise load_failure(spec, path, error) from None
    if info["missing_keys"]:
        raise load_failure(spec, path, KeyError(f"{len(info['missing_keys'])} missing tensors"))
    return model.eval().requires_grad_(False)


def normalisation(processor: dict, mean: tuple[float, ...], std: tuple[float, ...]) -> tuple:
    """Image mean and std from a ``preprocessor_config.json`` (the defaults where it has none), as tensors."""
    import torch

    return (torch.tensor(processor.get("image_mean", mean), dtype=torch.float32),
            torch.tensor(processor.get("image_std", std), dtype=torch.float32))


def weights_report(settings: Settings) -> dict[str, str]:
    """Per model setting: ``not set``, ``ok: PATH`` or why the directory is unusable (``worldstereo config``)."""
    from worldstereo.pipeline.depth.depth_anything_metric import SPEC as DEPTH_ANYTHING_METRIC
    from worldstereo.pipeline.depth.depth_pro import SPEC as DEPTH_PRO
    from worldstereo.pipeline.reconstructors.depth_anything_3 import SPEC as DEPTH_ANYTHING_3

    report = {spec.setting: spec.status(settings) for spec in (DEPTH_PRO, DEPTH_ANYTHING_METRIC, DEPTH_ANYTHING_3)}
    for field, path in settings.models:
        setting = f"WORLDSTEREO_MODELS__{field.upper()}"
        if setting not in report:
            report[setting] = "not set" if path is None else (f"ok: {path}" if path.exists() else f"missing: {path}")
    return report
