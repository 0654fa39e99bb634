"""WorldMirror 2.0 reconstructor (``worldmirror-2``): the 1.0 call with the release pipeline's pose priors, and a
checkout of HY-World 2.0 loaded through its own ``WorldMirrorPipeline.from_pretrained``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from test_worldmirror import CPU, RESOLUTION, Orbit, assert_frozen_from, forget, orbit, random_sim3, room  # noqa: F401 (fixtures)

from worldstereo.config import ModelPaths, Settings
from worldstereo.errors import ConfigurationError
from worldstereo.pipeline.reconstructors.worldmirror_2 import SETTING, WorldMirror2Reconstructor
from worldstereo.pipeline.registry import backend_class


def test_requested_cameras_are_priors_relative_to_the_first_and_the_result_is_in_the_world(orbit: Orbit):
    model = orbit.model(random_sim3(7))
    recon = WorldMirror2Reconstructor(CPU, model=model, resolution=RESOLUTION).reconstruct(orbit.video, orbit.request)
    torch.testing.assert_close(model.pose_priors[0], torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-6)
    depth = (orbit.points - orbit.cameras.centers.double()[:, None, None]).norm(dim=-1)
    assert float(((recon.points.double() - orbit.points).norm(dim=-1) / depth).max()) < 1e-4
    torch.testing.assert_close(recon.cameras.K, orbit.cameras.K)


def test_registry_and_release_resolution():
    assert backend_class("reconstructor", "worldmirror-2") is WorldMirror2Reconstructor
    assert WorldMirror2Reconstructor(CPU).resolution == 952


def test_missing_setting_checkout_and_weights_say_what_to_set(tmp_path: Path):
    with pytest.raises(ConfigurationError, match=SETTING):
        WorldMirror2Reconstructor(CPU).setup()
    settings = Settings(device="cpu", models=ModelPaths(worldmirror_2=tmp_path))
    with pytest.raises(ConfigurationError, match="no HY-World 2.0 checkout"):
        WorldMirror2Reconstructor(settings).setup()
    (tmp_path / "hyworld2" / "worldrecon").mkdir(parents=True)
    (tmp_path / "hyworld2" / "worldrecon" / "pipeline.py").write_text("")
    with pytest.raises(ConfigurationError, match="huggingface-cli download tencent/HY-World-2.0"):
        WorldMirror2Reconstructor(settings).setup()


CHECKOUT_PIPELINE = '''
import os

import torch


class WorldMirror(torch.nn.Module):
    def __init__(self, **config):
        super().__init__()
        self.config = config
        self.weight = torch.nn.Parameter(torch.ones(1))


class WorldMirrorPipeline:
    """As upstream: the model config and weights under ``{path}/{subfolder}``; the network is ``.model``."""

    def __init__(self, model):
        self.model = model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, subfolder="HY-WorldMirror-2.0", **kwargs):
        directory = os.path.join(pretrained_model_name_or_path, subfolder)
        assert os.path.isfile(os.path.join(directory, "model.safetensors")), "would download from the hub"
        model = WorldMirror(source=directory)
        return cls(model.eval())
'''


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(sys, "path", list(sys.path))
    package = tmp_path / "hyworld2" / "worldrecon"
    package.mkdir(parents=True)
    for init in (tmp_path / "hyworld2" / "__init__.py", package / "__init__.py"):
        init.write_text("")
    (package / "pipeline.py").write_text(CHECKOUT_PIPELINE)
    weights = tmp_path / "ckpts" / "HY-WorldMirror-2.0"
    weights.mkdir(parents=True)
    (weights / "config.json").write_text("{}")
    (weights / "model.safetensors").write_text("{}")
    yield tmp_path
    forget("hyworld2")


def test_setup_loads_the_network_through_the_checkouts_pipeline(checkout: Path):
    backend = WorldMirror2Reconstructor(Settings(device="cpu", models=ModelPaths(worldmirror_2=checkout)))
    backend.setup()
    assert backend.model.config == {"source": str(checkout / "ckpts" / "HY-WorldMirror-2.0")}
    assert_frozen_from(backend, checkout)
