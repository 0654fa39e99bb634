"""WorldMirror reconstructor adapter: call interface, Sim(3) alignment back to the world, configuration.

HunyuanWorld-Mirror is not installable here; ``SimilarWorldMirror`` stands in for it with the same call
interface and returns the exact synthetic geometry of the prior cameras, expressed in a frame of its own
(a random similarity away from the world), optionally with noise and outliers.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from worldstereo.config import ModelPaths, Settings
from worldstereo.errors import ConfigurationError, InvalidInputError
from worldstereo.geometry.align import Sim3
from worldstereo.geometry.camera import Camera, look_at, rigid_inverse
from worldstereo.geometry.render import CacheRender
from worldstereo.geometry.spherical import WORLD_UP
from worldstereo.pipeline.backends import GeneratedVideo, GenerationRequest, References
from worldstereo.pipeline.reconstructors.worldmirror import (
    COND_FLAGS,
    MAX_ANCHOR_POINTS,
    SETTING,
    WorldMirrorReconstructor,
    model_input_size,
)
from worldstereo.pipeline.registry import backend_class
from worldstereo.synthetic import RenderedViews, make_scene

CPU = Settings(device="cpu")
RESOLUTION = 112
FRAMES = 6


def random_sim3(seed: int) -> Sim3:
    generator = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    R = Q * torch.sign(torch.linalg.det(Q))
    scale = 0.3 + 2.7 * torch.rand((), generator=generator, dtype=torch.float64)
    return Sim3(scale, R, torch.randn(3, generator=generator, dtype=torch.float64) * 2)


class SimilarWorldMirror:
    """``WorldMirror.forward`` of a synthetic scene seen by ``cameras``: their exact points, depth and poses,
    moved into the model's own frame by ``to_model`` (a similarity), with Gaussian noise of ``noise``
    (model units) on points and centres, and a share ``outliers`` of frame-0 points knocked off by a unit
    Gaussian offset.

    It reads its priors as upstream's ``_process_conditioning`` does: ``cond_flags[0]`` the poses
    (``camera_poses``), ``[1]`` the depth (``depthmap``), ``[2]`` the rays (``camera_intrs``), each only when
    present. Without the pose prior its path drifts (``UNPOSED_DRIFT`` per frame), without the rays its focal
    length is off by ``UNRAYED_FOCAL`` — what a model guessing them alone would do. It expects the requested
    ``cameras`` as priors, at the resolution of ``points [N,h,w,3]``."""

    UNPOSED_DRIFT, UNRAYED_FOCAL = 0.05, 1.1

    def __init__(self, cameras: Camera, points: torch.Tensor, depth: torch.Tensor, to_model: Sim3, *,
                 noise: float = 0.0, outliers: float = 0.0) -> None:
        self.cameras, self.points, self.depth = cameras.to(dtype=torch.float64), points, depth
        self.to_model, self.noise, self.outliers = to_model, noise, outliers
        self.generator = torch.Generator().manual_seed(1)

    def __call__(self, *, views: dict, cond_flags: list[int]) -> dict:
        poses = cond_flags[0] == 1 and "camera_poses" in views
        rays = cond_flags[2] == 1 and "camera_intrs" in views
        images = views["img"]
        _, count, channels, height, width = images.shape
        assert (count, height, width) == (len(self.cameras), self.cameras.height, self.cameras.width) and channels == 3
        assert images.dtype == torch.float32 and 0 <= float(images.min()) <= float(images.max()) <= 1
        if poses:  # the path up to one rigid motion: the model normalises the poses it is given
            relative = rigid_inverse(views["camera_poses"][0, :1].double()) @ views["camera_poses"][0].double()
            expected = rigid_inverse(self.cameras.c2w[:1]) @ self.cameras.c2w
            torch.testing.assert_close(relative, expected, rtol=0, atol=1e-5)
            self.pose_priors = views["camera_poses"][0].double()
        if rays:
            torch.testing.assert_close(views["camera_intrs"][0].double(), self.cameras.K, rtol=0, atol=1e-4)
        shift = torch.zeros(count, 3, dtype=torch.float64)  # world units, along x, growing along the path
        if not poses:
            shift[:, 0] = self.UNPOSED_DRIFT * torch.arange(count, dtype=torch.float64)
        K = self.cameras.K.clone()
        if not rays:
            K[:, :2, :2] *= self.UNRAYED_FOCAL
        points = self.to_model.apply(self.points + shift[:, None, None])
        world_c2w = self.cameras.c2w.clone()
        world_c2w[:, :3, 3] += shift
        c2w = self.to_model.apply_c2w(world_c2w)
        points = points + self.noise * torch.randn(points.shape, generator=self.generator, dtype=points.dtype)
        c2w[:, :3, 3] += self.noise * torch.randn(count, 3, generator=self.generator, dtype=c2w.dtype)
        wrong = torch.rand(height, width, generator=self.generator) < self.outliers
        points[0][wrong] += torch.randn(int(wrong.sum()), 3, generator=self.generator, dtype=points.dtype)
        return {
            "pts3d": points[None].float(),
            "pts3d_conf": torch.ones(1, count, height, width),
            "depth": (self.depth * self.to_model.scale)[None, ..., None].float(),
            "camera_poses": c2w[None].float(),
            "camera_intrs": K[None].float(),
        }


@dataclass(frozen=True)
class Orbit:
    """A generated video of a synthetic scene and the exact geometry at the model's input size."""

    cameras: Camera  # requested, at the video size
    video: GeneratedVideo
    request: GenerationRequest
    model_cameras: Camera  # resized to the model's input
    points: torch.Tensor  # [N,h,w,3] world points seen by model_cameras
    depth: torch.Tensor  # [N,h,w]

    def model(self, to_model: Sim3, **errors: float) -> SimilarWorldMirror:
        return SimilarWorldMirror(self.model_cameras, self.points, self.depth, to_model, **errors)

    def footprint(self) -> torch.Tensor:
        """Size of a model pixel on the surface it sees, ``[N,h,w]``."""
        distance = (self.points - self.model_cameras.centers.double()[:, None, None]).norm(dim=-1)
        return distance / self.model_cameras.K[:, None, None, 0, 0]


def make_orbit(scene, cameras: Camera, *, anchor: bool = True) -> Orbit:
    """Renders at the video size, and again at the model's input size when that differs."""
    rendered = scene.render(cameras.to(dtype=torch.float64))
    video, request = request_for(cameras, rendered, anchor=anchor)
    model_cameras = cameras.resized(*model_input_size(cameras.height, cameras.width, RESOLUTION))
    exact = model_cameras.to(dtype=torch.float64)
    same_size = (exact.height, exact.width) == (cameras.height, cameras.width)
    depth = rendered.depth if same_size else scene.render(exact).depth
    return Orbit(cameras, video, request, model_cameras, exact.backproject(depth), depth)


def orbit_cameras(scene, height: int, width: int, *, radius: float = 0.6) -> Camera:
    """``FRAMES`` cameras on an arc around the scene's input view, all looking at its target."""
    eye = torch.tensor(scene.eye, dtype=torch.float64)
    target = torch.tensor(scene.target, dtype=torch.float64)
    angles = torch.linspace(0, math.pi / 2, FRAMES, dtype=torch.float64)
    offsets = torch.stack([torch.sin(angles), 1 - torch.cos(angles), 0.3 * torch.sin(angles)], dim=-1) * radius
    c2w = look_at(eye + offsets, target.expand(FRAMES, 3), torch.tensor(WORLD_UP, dtype=torch.float64))
    return Camera.from_fov(c2w, height, width, 65.0).to(dtype=torch.float32)


def request_for(
    cameras: Camera, rendered: RenderedViews, *, anchor: bool = True
) -> tuple[GeneratedVideo, GenerationRequest]:
    """The generated video (exact renders) and its request; GGM frame 0 holds the given frame's depth if ``anchor``."""
    depth = torch.zeros(len(cameras), cameras.height, cameras.width)
    if anchor:
        depth[0] = rendered.depth[0].float()
    count, height, width = depth.shape
    ggm = CacheRender(rendered.rgb, depth, depth == 0)
    references = References(
        target_indices=torch.tensor([0]),
        images=rendered.rgb[:1],
        cameras=cameras[0],
        scores=torch.ones(1),
        bank_indices=torch.tensor([0]),
        target_pointmaps=torch.zeros(1, height, width, 3),
        reference_pointmaps=torch.zeros(1, height, width, 3),
    )
    request = GenerationRequest("scene", "orbit", rendered.rgb[0], cameras, ggm, references)
    return GeneratedVideo(rendered.rgb), request


@pytest.fixture(scope="module")
def room():
    return make_scene("room", 0)


@pytest.fixture(scope="module")
def orbit(room) -> Orbit:
    return make_orbit(room, orbit_cameras(room, 56, 112))  # already the model's input size: exact anchors


def reconstruct(orbit: Orbit, model: SimilarWorldMirror):
    backend = WorldMirrorReconstructor(CPU, model=model, resolution=RESOLUTION)
    return backend.reconstruct(orbit.video, orbit.request)


def test_model_input_size_keeps_the_aspect_on_patch_multiples():
    assert model_input_size(480, 768) == (322, 518)
    assert model_input_size(768, 480) == (518, 322)
    assert model_input_size(56, 112, 112) == (56, 112)
    assert all(side % 14 == 0 for side in model_input_size(512, 720))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_model_output_is_aligned_back_to_the_world(orbit: Orbit, seed: int):
    to_model = random_sim3(seed)
    recon = reconstruct(orbit, orbit.model(to_model))

    assert recon.frame == "world" and recon.points.shape == (FRAMES, 56, 112, 3) and bool(recon.valid.all())
    depth = (orbit.points - orbit.cameras.centers.double()[:, None, None]).norm(dim=-1)
    assert float(((recon.points.double() - orbit.points).norm(dim=-1) / depth).max()) < 1e-4
    centre_error = (recon.cameras.centers.double() - orbit.cameras.centers.double()).norm(dim=-1)
    assert float(centre_error.max()) < 1e-4
    torch.testing.assert_close(recon.cameras.c2w[:, :3, :3], orbit.cameras.c2w[:, :3, :3], rtol=0, atol=1e-5)
    torch.testing.assert_close(recon.cameras.K, orbit.cameras.K)
    torch.testing.assert_close(recon.colors, orbit.video.frames)
    to_world, relative = recon.extras["sim3"], recon.extras["relative"]
    assert float(to_world.scale) == pytest.approx(1 / float(to_model.scale), rel=1e-5)
    torch.testing.assert_close(to_world.apply(relative.points.double()), recon.points.double(), rtol=0, atol=1e-4)
    expected_centres = to_model.apply(orbit.cameras.centers.double())
    torch.testing.assert_close(relative.cameras.centers, expected_centres, rtol=0, atol=1e-4)


def test_video_resolution_other_than_the_model_input(room):
    orbit = make_orbit(room, orbit_cameras(room, 60, 120))  # resized to 56 x 112: anchor depth by nearest pixel
    recon = reconstruct(orbit, orbit.model(random_sim3(3)))

    assert recon.points.shape == (FRAMES, 56, 112, 3) and recon.colors.shape == (FRAMES, 56, 112, 3)
    error = (recon.points.double() - orbit.points).norm(dim=-1) / orbit.footprint()
    assert float(error.median()) < 0.1 and float(error.max()) < 0.25  # in model pixels
    torch.testing.assert_close(recon.cameras.K, orbit.model_cameras.K)


def test_noise_and_outliers_keep_the_error_bounded(orbit: Orbit):
    to_model = random_sim3(4)
    noise = 0.01  # metres, in world units
    recon = reconstruct(orbit, orbit.model(to_model, noise=noise * float(to_model.scale), outliers=0.2))

    error = (recon.points.double() - orbit.points).norm(dim=-1)
    error[0] = error[0].where(error[0] < 0.5, 0.0)  # the outliers themselves stay wrong
    # per-point noise has norm ~ noise * sqrt(3); the fitted similarity adds little to it
    assert float(error.median()) < 2.5 * noise and float(error.quantile(0.9)) < 4 * noise
    centre_error = (recon.cameras.centers.double() - orbit.cameras.centers.double()).norm(dim=-1)
    assert float(centre_error.max()) < 5 * noise
    anchors = MAX_ANCHOR_POINTS + FRAMES
    assert 0.7 * anchors < recon.extras["align_inliers"] < 0.82 * anchors  # the outliers are rejected


def test_centres_alone_align_a_path_with_baseline(orbit: Orbit):
    unknown = torch.zeros_like(orbit.request.ggm.depth)  # no known depth for frame 0
    request = replace(orbit.request, ggm=CacheRender(orbit.request.ggm.rgb, unknown, unknown == 0))
    backend = WorldMirrorReconstructor(CPU, model=orbit.model(random_sim3(5)), resolution=RESOLUTION)
    recon = backend.reconstruct(orbit.video, request)
    assert float((recon.points.double() - orbit.points).norm(dim=-1).max()) < 1e-3


def test_no_anchor_and_collinear_centres_cannot_be_aligned(room):
    eye = torch.tensor(room.eye, dtype=torch.float64)
    eyes = eye + torch.linspace(0, 0.5, FRAMES, dtype=torch.float64)[:, None] * torch.tensor([1.0, 0.0, 0.0])
    target = torch.tensor(room.target, dtype=torch.float64)
    c2w = look_at(eyes, eyes + (target - eye), torch.tensor(WORLD_UP, dtype=torch.float64))
    orbit = make_orbit(room, Camera.from_fov(c2w, 56, 112, 65.0).to(dtype=torch.float32), anchor=False)
    with pytest.raises(InvalidInputError, match="collinear"):
        reconstruct(orbit, orbit.model(random_sim3(6)))


# --- configuration -----------------------------------------------------------------------------
def test_registry_names_the_backend():
    assert backend_class("reconstructor", "worldmirror") is WorldMirrorReconstructor


def test_resolution_must_be_a_patch_multiple():
    with pytest.raises(ConfigurationError, match="multiple of 14"):
        WorldMirrorReconstructor(CPU, resolution=500)


def test_missing_setting_says_what_to_set():
    with pytest.raises(ConfigurationError, match=SETTING) as error:
        WorldMirrorReconstructor(Settings(device="cpu", models=ModelPaths(worldmirror=None))).setup()
    assert "HunyuanWorld-Mirror" in str(error.value) and "model.safetensors" in str(error.value)


def test_missing_checkout_and_weights_name_what_is_missing(tmp_path: Path):
    settings = Settings(device="cpu", models=ModelPaths(worldmirror=tmp_path))
    with pytest.raises(ConfigurationError, match="no HunyuanWorld-Mirror checkout"):
        WorldMirrorReconstructor(settings).setup()
    module = tmp_path / "src" / "models" / "models" / "worldmirror.py"
    module.parent.mkdir(parents=True)
    module.write_text("")
    with pytest.raises(ConfigurationError, match="huggingface-cli download") as error:
        WorldMirrorReconstructor(settings).setup()
    assert "config.json, model.safetensors" in str(error.value)


CHECKOUT_MODULE = '''
import torch


class WorldMirror(torch.nn.Module):
    """Loads like PyTorchModelHubMixin.from_pretrained: a local directory of config.json + weights."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))

    @classmethod
    def from_pretrained(cls, directory):
        model = cls()
        model.loaded_from = directory
        return model
'''


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory in the documented layout whose ``src`` package defines a loadable ``WorldMirror``."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [m for m in sys.modules if m == "src" or m.startswith("src.")]:
        monkeypatch.delitem(sys.modules, name)
    module = tmp_path / "src" / "models" / "models" / "worldmirror.py"
    module.parent.mkdir(parents=True)
    module.write_text(CHECKOUT_MODULE)
    (tmp_path / "ckpts").mkdir()
    for name in ("config.json", "model.safetensors"):
        (tmp_path / "ckpts" / name).write_text("{}")
    yield tmp_path
    forget("src")


def forget(package: str) -> None:
    """Drop ``package`` and its submodules from ``sys.modules`` (a checkout's import does not outlive its test)."""
    for name in [m for m in sys.modules if m == package or m.startswith(f"{package}.")]:
        del sys.modules[name]


def test_setup_imports_the_checkout_and_loads_its_weights(checkout: Path):
    backend = WorldMirrorReconstructor(Settings(device="cpu", models=ModelPaths(worldmirror=checkout)))
    backend.setup()
    assert backend.model.loaded_from == str(checkout / "ckpts")
    assert_frozen_from(backend, checkout)


def assert_frozen_from(backend, checkout: Path) -> None:
    """The backend's model is in eval mode without gradients, imported from ``checkout`` (first on ``sys.path``)."""
    assert not backend.model.training and not any(p.requires_grad for p in backend.model.parameters())
    assert sys.path[0] == str(checkout)


def test_checkout_that_fails_to_import_names_its_requirements(checkout: Path):
    (checkout / "src" / "models" / "models" / "worldmirror.py").write_text("import gsplat_not_installed\n")
    with pytest.raises(ConfigurationError, match="requirements.txt"):
        WorldMirrorReconstructor(Settings(device="cpu", models=ModelPaths(worldmirror=checkout))).setup()
