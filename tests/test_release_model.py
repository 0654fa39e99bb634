"""The released WorldStereo 2.0 architecture: exact state-dict layout, and the numerics a checkpoint relies on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from worldstereo.models.release_config import ControlNetConfig, wan_i2v_14b
from worldstereo.models.release_transformer import ReleaseTransformer

# State-dict keys and shapes of the released classes for four ControlNet configs (built on the meta device).
MANIFEST = Path(__file__).parent / "data" / "released_2_0_manifest.json"


def _manifest() -> dict:
    return json.loads(MANIFEST.read_text())


@pytest.mark.parametrize("name", ["camera", "memory", "memory_dim2048_l10_mid64", "memory_no_camera_tokens"])
def test_state_dict_matches_release_manifest(name: str) -> None:
    entry = _manifest()[name]
    with torch.device("meta"):
        model = ReleaseTransformer(
            wan_i2v_14b(), ControlNetConfig.from_dict(entry["controlnet_cfg"]), memory=name != "camera"
        )
    ours = {key: list(value.shape) for key, value in model.state_dict().items()}
    expected = entry["state_dict"]
    assert set(ours) == set(expected)
    assert {key: shape for key, shape in ours.items() if shape != expected[key]} == {}
