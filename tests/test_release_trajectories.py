"""The release preset set reproduces the shipped reconstruction trajectories of the public release.

``fixtures/release_trajectories.json`` holds, per scene of ``examples/reconstruction``, the start camera,
intrinsics, the median depth ``d`` and every shipped world-to-camera pose (derivation in the file).
"""

import json
from pathlib import Path

import pytest
import torch

from worldstereo.config import ReleasePresetSettings, TrajectorySettings
from worldstereo.geometry.camera import Camera, look_at, rigid_inverse
from worldstereo.geometry.trajectory import plan_trajectories, world_vertical

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "release_trajectories.json").read_text())


def _settings(**release: float) -> TrajectorySettings:
    return TrajectorySettings(preset_set="release", num_frames=21, shrink_for_collisions=False,
                              release=ReleasePresetSettings(**release))


@pytest.mark.parametrize("scene", sorted(FIXTURE["scenes"]))
def test_release_presets_reproduce_shipped_poses(scene: str) -> None:
    data = FIXTURE["scenes"][scene]
    K = torch.tensor(data["K"], dtype=torch.float64)[None]
    start = rigid_inverse(torch.tensor(data["start_w2c"], dtype=torch.float64)[None])
    camera = Camera(K, start, data["height"], data["width"])
    d = data["d"]
    plans = plan_trajectories(camera, d, _settings(up_radius_ratio=data["up_radius_ratio"]))
    assert [p.name for p in plans] == ["eloop", "up", "right", "left"]
    for plan in plans:
        shipped = torch.tensor(data["w2c"][plan.name], dtype=torch.float64)
        ours = plan.cameras.w2c
        assert ours.shape == shipped.shape == (21, 4, 4)
        assert torch.allclose(plan.cameras.K, K.expand(21, 3, 3))
        centres, shipped_centres = plan.cameras.centers, rigid_inverse(shipped)[:, :3, 3]
        assert (centres - shipped_centres).norm(dim=-1).max() / d < 1e-3, plan.name
        relative = ours[:, :3, :3] @ shipped[:, :3, :3].transpose(1, 2)
        cos = ((relative.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
        assert torch.rad2deg(torch.arccos(cos)).max() < 0.1, plan.name


def test_release_up_pivot_defaults_to_d() -> None:
    """Two of the three shipped scenes pivot their rise at ``d`` (the default); the kitchen at ``1.3 d``."""
    assert ReleasePresetSettings().up_radius_ratio == 1.0
    assert sorted(s["up_radius_ratio"] for s in FIXTURE["scenes"].values()) == [1.0, 1.0, 1.3]


def test_release_turns_use_world_vertical_of_a_z_up_world() -> None:
    """A camera in a z-up world turns about +z: heights stay, the last camera looks back at the centre."""
    eye, target = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), torch.tensor([3.0, 0.0, 0.5], dtype=torch.float64)
    c2w = look_at(eye, target, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))[None]
    camera = Camera.from_fov(c2w, 48, 64, 60.0)
    assert torch.equal(world_vertical(c2w[0]), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    right = next(p for p in plan_trajectories(camera, 2.0, _settings()) if p.name == "right")
    assert torch.allclose(right.cameras.centers[:, 2], torch.ones(21, dtype=torch.float64))
    centre = eye + 2.0 * right.cameras.forward[0]
    end = right.cameras.centers[-1]
    assert torch.allclose(end[:2], 2 * centre[:2] - eye[:2], atol=1e-9)
    first, last = right.cameras.forward[0], right.cameras.forward[-1]
    assert torch.allclose(last, torch.stack([-first[0], -first[1], first[2]]), atol=1e-9)


def test_release_presets_shrink_for_collisions() -> None:
    """A wall just behind the look point stops the half turns: they are shrunk like the paper's presets."""
    camera = Camera.from_fov(torch.eye(4, dtype=torch.float64)[None], 48, 64, 60.0)
    depth = torch.full((48, 64), 2.0, dtype=torch.float64)
    settings = _settings().model_copy(update={"shrink_for_collisions": True})
    plans = {p.name: p for p in plan_trajectories(camera, 2.0, settings, depth=depth)}
    assert plans["right"].fraction < 1.0 and plans["left"].fraction < 1.0
    assert plans["right"].angle_deg < 180.0
