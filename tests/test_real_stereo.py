"""Cameras, back-projection and the 3D cache renderer on real photographs with ground-truth depth.

Middlebury 2014 "Motorcycle" (as shipped, 4x down-sampled, by scikit-image): a rectified stereo pair
and the left view's ground-truth disparity. Depth is ``f B / (d + doffs)``; the right camera sits
``B`` along x with its principal point ``doffs`` further right. Middlebury puts pixel centres at
integer coordinates, this project at integer + 0.5.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

from worldstereo.config import Settings
from worldstereo.geometry.buckets import fit_to_bucket
from worldstereo.geometry.camera import Camera
from worldstereo.geometry.render import depth_edge_mask, render_points
from worldstereo.geometry.resample import resample_nearest
from worldstereo.inputs import load_input
from worldstereo.pipeline.local import process_scene
from worldstereo.pipeline.state import StateStore
from worldstereo.storage import LocalStore

FOCAL, CX, CY, DOFFS, BASELINE = 994.978, 311.193, 254.877, 31.086, 0.193001  # pixels, metres


class StereoPair:
    def __init__(self) -> None:
        from skimage import data

        left, right, disparity = data.stereo_motorcycle()
        self.height, self.width = disparity.shape
        self.left = torch.from_numpy(left).float() / 255
        self.right = torch.from_numpy(right).float() / 255
        self.valid = torch.from_numpy(np.isfinite(disparity))
        depth = FOCAL * BASELINE / (torch.from_numpy(disparity).double() + DOFFS)
        self.depth = torch.where(self.valid, depth, 0.0)
        self.left_camera = self.camera(0.0, CX)

    def camera(self, x: float, cx: float) -> Camera:
        c2w = torch.eye(4, dtype=torch.float64)
        c2w[0, 3] = x
        K = Camera.intrinsics(FOCAL, FOCAL, cx + 0.5, CY + 0.5)
        return Camera(K[None], c2w[None], self.height, self.width)

    def right_camera(self, cx_shift: float = 0.0, baseline: float = BASELINE) -> Camera:
        return self.camera(baseline, CX + DOFFS + cx_shift)

    def cloud(self, drop_edges: bool = False) -> tuple[Tensor, Tensor]:
        keep = self.valid & ~depth_edge_mask(self.depth[None])[0] if drop_edges else self.valid
        points = self.left_camera.backproject(self.depth[None])[0]
        return points[keep].float(), self.left[keep]

    def warp_psnr(self, camera: Camera, radius: int = 0, drop_edges: bool = False) -> tuple[float, float, float]:
        """On the pixels the render covers: PSNR of the left view rendered into ``camera`` against the
        right photo, PSNR of the left photo as it is against the right one; and the coverage."""
        points, colors = self.cloud(drop_edges)
        rendered = render_points(points, colors, camera, radius=radius)
        covered = rendered.covered[0]
        warped = _psnr(rendered.rgb[0][covered], self.right[covered])
        return warped, _psnr(self.left[covered], self.right[covered]), float(covered.float().mean())


def _psnr(a: Tensor, b: Tensor) -> float:
    return -10 * math.log10(float((a - b).square().mean()))


@pytest.fixture(scope="module")
def pair() -> StereoPair:
    return StereoPair()


def test_the_left_view_rendered_into_its_own_camera_is_exact(pair: StereoPair):
    points, colors = pair.cloud()
    rendered = render_points(points, colors, pair.left_camera, radius=0)
    covered = rendered.covered[0]
    assert torch.equal(covered, pair.valid)
    assert torch.equal(rendered.rgb[0][covered], pair.left[covered])
    assert torch.allclose(rendered.depth[0][covered].double(), pair.depth[covered], rtol=1e-6)


def test_ground_truth_depth_warps_the_left_photo_onto_the_right_one(pair: StereoPair):
    warped, unwarped, coverage = pair.warp_psnr(pair.right_camera())
    assert coverage > 0.8
    assert warped > 26.5 and unwarped < 13.5  # measured: 26.9 dB against 12.9 dB


def test_the_calibrated_conventions_fit_the_photos_best(pair: StereoPair):
    best = pair.warp_psnr(pair.right_camera())[0]
    for shift in (-0.5, 0.5):  # a half-pixel slip in the pixel-centre convention
        assert pair.warp_psnr(pair.right_camera(cx_shift=shift))[0] < best - 1.0
    for baseline in (0.9 * BASELINE, 1.1 * BASELINE, -BASELINE):
        assert pair.warp_psnr(pair.right_camera(baseline=baseline))[0] < best - 8.0


def test_dropping_depth_edges_removes_flying_points_from_splats(pair: StereoPair):
    with_edges = pair.warp_psnr(pair.right_camera(), radius=1)[0]
    without = pair.warp_psnr(pair.right_camera(), radius=1, drop_edges=True)[0]
    assert without > with_edges + 0.75  # measured: 21.3 dB against 20.2 dB


def test_the_pipeline_walks_to_the_right_camera_and_renders_the_held_out_photo(pair: StereoPair, tmp_path):
    """A custom path from the left camera to the right one, through every stage with the warp generator:
    its last frame is compared with the right photo, which the pipeline never sees."""
    right_pose = pair.right_camera().c2w[0]
    camera_file = {"kind": "perspective", "K": pair.left_camera.K[0].tolist(), "c2w": pair.left_camera.c2w[0].tolist(),
                   "trajectories": [{"name": "stereo", "c2w": [right_pose.tolist()]}]}
    image = io.BytesIO()
    Image.fromarray((pair.left * 255).round().byte().numpy()).save(image, format="PNG")
    depth = io.BytesIO()
    np.save(depth, pair.depth.numpy())
    scene = load_input(image.getvalue(), depth.getvalue(), json.dumps(camera_file).encode(), max_pixels=10**7)
    settings = Settings(generator="warp", reconstructor="rendered-depth", depth_backend="sidecar",
                        resolution_scale=0.5, trajectory={"order": (), "num_frames": 9})
    store = LocalStore(tmp_path)

    summary = process_scene(store, "motorcycle-0000000000", scene, settings)

    assert list(summary["trajectories"]) == ["stereo"]
    state = StateStore(store, settings.storage.work_bucket, "motorcycle-0000000000").load("stereo")
    last = state.bank[state.bank.indices_of("stereo")[-1]]
    assert last.index == 8 and torch.allclose(last.camera.c2w[0], right_pose)
    # the right photo as the left intrinsics see it from the right pose, fitted to the bucket like the input
    seen = pair.camera(BASELINE, CX)
    truth, fitted = fit_to_bucket(resample_nearest(pair.right, pair.right_camera(), seen), seen, last.image.shape[:2])
    assert torch.allclose(fitted.K, last.camera.K.to(fitted.K))
    inside = torch.isfinite(truth).all(dim=-1)
    start = state.starts[0].image
    assert inside.float().mean() > 0.9
    generated, unmoved = _psnr(last.image[inside], truth[inside]), _psnr(start[inside], truth[inside])
    assert generated > 18.0 and unmoved < 13.0  # measured: 19.0 dB against 11.6 dB (17% of it hole-filled)
