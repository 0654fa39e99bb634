"""The infra files name only settings that exist, with values the settings model accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from worldstereo.config import Settings, load_settings

INFRA = Path(__file__).resolve().parents[1] / "infra"
# WORLDSTEREO_* names that are not settings: where the checkout is (prefect.yaml's pull step), the YAML file
NOT_SETTINGS = {"WORLDSTEREO_PROJECT_DIR", "WORLDSTEREO_CONFIG"}
NAME = re.compile(r"\bWORLDSTEREO_[A-Z0-9_]*[A-Z0-9]\b")
# NAME=value (env files, shell), NAME: value (compose); {name: NAME, value: value} (Kubernetes)
ASSIGNMENTS = (re.compile(r"\b(WORLDSTEREO_[A-Z0-9_]+)\s*[:=]\s*\"?([^\"\n#]*)"),
               re.compile(r"\{name: (WORLDSTEREO_[A-Z0-9_]+), value: \"?([^\"}]*)"))
DEFAULTED = re.compile(r"^\$\{[A-Z0-9_]+:-(.*)\}$")  # compose's ${VAR:-default}


def infra_files() -> list[Path]:
    return sorted(p for p in INFRA.iterdir() if p.is_file() and not p.name.startswith("."))


def setting_path(name: str) -> list[str]:
    return name.removeprefix("WORLDSTEREO_").lower().split("__")


def is_setting(name: str) -> bool:
    """Whether ``name`` (``__`` between nested fields) is a field of :class:`Settings` or a group of them."""
    model: type[BaseModel] | None = Settings
    for part in setting_path(name):
        if model is None or part not in model.model_fields:
            return False
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return True


def assigned_values() -> dict[str, str]:
    """Every WORLDSTEREO_* assignment in infra/ whose value is literal (or a compose default), by name."""
    values: dict[str, str] = {}
    for path in infra_files():
        for name, raw in (found for pattern in ASSIGNMENTS for found in pattern.findall(path.read_text())):
            value = raw.strip()
            if defaulted := DEFAULTED.match(value):
                value = defaulted.group(1)
            if name not in NOT_SETTINGS and value and "$" not in value:
                values[name] = value
    return values


def test_infra_names_only_existing_settings() -> None:
    names = {(path.name, name) for path in infra_files() for name in NAME.findall(path.read_text())}
    assert len(names) > 30  # the files were read
    unknown = sorted((file, name) for file, name in names if name not in NOT_SETTINGS and not is_setting(name))
    assert unknown == []


def test_infra_values_load_through_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    values = assigned_values()
    assert {"WORLDSTEREO_DEPTH_BACKEND", "WORLDSTEREO_RECONSTRUCTOR", "WORLDSTEREO_WEBHOOK__PARAMETERS"} <= set(values)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert (settings.depth_backend, settings.generator, settings.reconstructor) == (
        "auto", "worldstereo", "depth-anything-3")
    assert settings.generation.variant == "memory-dmd" and settings.webhook.parameters == {}


def test_the_check_catches_a_stale_name() -> None:
    assert is_setting("WORLDSTEREO_MODELS__WAN_I2V") and is_setting("WORLDSTEREO_STORAGE__ENDPOINT")
    assert not is_setting("WORLDSTEREO_MODELS__NO_SUCH_MODEL") and not is_setting("WORLDSTEREO_STORAGE__ENDPOINT__X")
    assert not is_setting("WORLDSTEREO_WEBHOOK_TOKEN")  # one underscore: not the nested webhook.token
