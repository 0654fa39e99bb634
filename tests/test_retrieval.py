import math

import pytest
import torch

from worldstereo.errors import InvalidInputError
from worldstereo.geometry.camera import Camera, look_at
from worldstereo.memory.bank import MemoryBank
from worldstereo.memory.pointmap import pointmap_pair, pointmap_pairs
from worldstereo.memory.retrieval import frustum_corners, frustum_overlap_scores, retrieve_references

F64 = dict(dtype=torch.float64)
UP = torch.tensor([0.0, 0.0, 1.0], **F64)


def _camera(eye, target, height: int = 48, width: int = 64, fov: float = 60.0) -> Camera:
    c2w = look_at(torch.tensor(eye, **F64), torch.tensor(target, **F64), UP)
    return Camera.from_fov(c2w, height, width, fov)


def _yaw_cameras(yaws_deg: torch.Tensor, height: int = 48, width: int = 64) -> Camera:
    """Cameras at the origin looking horizontally at the given yaws."""
    yaw = torch.deg2rad(yaws_deg.to(torch.float64))
    forward = torch.stack([torch.cos(yaw), torch.sin(yaw), torch.zeros_like(yaw)], dim=-1)
    return Camera.from_fov(look_at(torch.zeros_like(forward), forward, UP), height, width, 60.0)


# --- frusta and scores ----------------------------------------------------------------------------
def test_frustum_corners_go_through_the_image_corners():
    camera = Camera(Camera.intrinsics(2.0, 2.0, 2.0, 1.0)[None], torch.eye(4, **F64)[None], 2, 4)
    corners = frustum_corners(camera, 0.1, 10.0)[0]
    expected_near = torch.tensor([[-0.1, -0.05, 0.1], [0.1, -0.05, 0.1], [0.1, 0.05, 0.1], [-0.1, 0.05, 0.1]], **F64)
    assert torch.allclose(corners[:4], expected_near) and torch.allclose(corners[4:], 100 * expected_near)
    moved = _camera((1.0, 2.0, 3.0), (4.0, 2.0, 3.0))
    corners = frustum_corners(moved, 0.1, 10.0)[0]
    uv, z = moved.project(corners)
    assert torch.allclose(z[0], torch.tensor([0.1] * 4 + [10.0] * 4, **F64))
    assert torch.allclose(uv[0, :4], torch.tensor([[0.0, 0.0], [64.0, 0.0], [64.0, 48.0], [0.0, 48.0]], **F64))


def test_scores_rank_identical_over_partial_over_opposite():
    target = _camera((0.0, 0.0, 0.0), (1.0, 0.0, 0.0))
    memory = Camera.cat(
        [
            _camera((0.0, 0.0, 0.0), (1.0, 0.0, 0.0)),  # identical
            _camera((0.0, 0.0, 0.0), (-1.0, 0.0, 0.0)),  # opposite
            _camera((0.0, 1.0, 0.0), (1.0, 1.0, 0.0)),  # shifted sideways: partial overlap
            _camera((0.0, 0.0, 0.0), (1.0, 1.0, 0.0)),  # turned by 45 degrees: partial overlap
            _camera((0.0, 4.0, 0.0), (1.0, 4.0, 0.0)),  # shifted far: less overlap
        ]
    )
    scores = frustum_overlap_scores(target, memory, 0.1, 10.0)[0]
    assert scores[0].item() == pytest.approx(1.0, abs=1e-12)
    assert scores[1].item() == 0.0
    assert 0.0 < scores[4] < scores[2] < 1.0 and 0.0 < scores[3] < 1.0
    assert scores.argmax() == 0


def test_angle_weight_damps_pairs_turned_beyond_90_degrees():
    target = _yaw_cameras(torch.tensor([0.0]))
    # wide frusta from cameras far behind each other keep the boxes overlapping at any angle
    memory = _yaw_cameras(torch.tensor([60.0, 90.0, 120.0, 150.0]))
    scores = frustum_overlap_scores(target, memory, 0.1, 10.0)[0]
    corners_t, corners_m = frustum_corners(target, 0.1, 10.0), frustum_corners(memory, 0.1, 10.0)
    lo_t, hi_t, lo_m, hi_m = corners_t.amin(1), corners_t.amax(1), corners_m.amin(1), corners_m.amax(1)
    inter = (torch.minimum(hi_t, hi_m) - torch.maximum(lo_t, lo_m)).clamp(min=0).prod(-1)
    iou = inter / ((hi_t - lo_t).prod(-1) + (hi_m - lo_m).prod(-1) - inter)
    weight = torch.tensor([1.0, 1.0, math.exp(5 * -30 / 180), math.exp(5 * -60 / 180)], **F64)
    assert torch.allclose(scores, iou * weight, atol=1e-12)


# --- retrieval ------------------------------------------------------------------------------------
def test_each_target_retrieves_its_own_view():
    bank = MemoryBank()
    yaws = torch.arange(0.0, 360.0, 30.0)
    bank.add(torch.zeros(12, 48, 64, 3), _yaw_cameras(yaws), "panorama")
    targets = _yaw_cameras(torch.arange(0.0, 360.0, 7.5) + 1.0)  # 48 targets just off the bank's yaws
    result = retrieve_references(targets, bank, max_references=12)
    assert result.target_indices.tolist() == torch.round(torch.linspace(0, 47, 12)).long().tolist()
    expected = torch.round(((torch.arange(0.0, 360.0, 7.5) + 1.0)[result.target_indices] / 30.0)).long() % 12
    assert torch.equal(result.reference_indices, expected)
    assert result.score_matrix.shape == (12, 12)
    assert torch.equal(result.scores, result.score_matrix.amax(dim=1))


def test_default_sampling_is_n_over_4_uniform_from_frame_0():
    bank = MemoryBank()
    bank.add(torch.zeros(1, 48, 64, 3), _yaw_cameras(torch.tensor([0.0])), "input")
    targets = _yaw_cameras(torch.linspace(0.0, 90.0, 81))
    result = retrieve_references(targets, bank)
    idx = result.target_indices
    assert len(idx) == 20 and idx[0] == 0 and idx[-1] == 80
    assert idx.diff().max() - idx.diff().min() <= 1
    assert len(retrieve_references(targets[:3], bank).target_indices) == 1


def test_distinct_references_are_capped():
    yaws = torch.arange(0.0, 360.0, 10.0)
    memory = _yaw_cameras(yaws)
    targets = _yaw_cameras(yaws + 2.0)
    uncapped = retrieve_references(targets, memory, num_targets=36, max_references=36)
    assert len(uncapped.distinct_references) == 36
    capped = retrieve_references(targets, memory, num_targets=36, max_references=8)
    assert len(capped.distinct_references) == 8
    scores = capped.score_matrix
    picked = scores.argmax(dim=1).unique()
    kept = picked[scores[:, picked].sum(0).topk(8).indices]
    assert set(capped.distinct_references.tolist()) == set(kept.tolist())
    assert torch.equal(capped.scores, scores[:, kept].amax(dim=1))  # each target re-assigned to its best kept frame


def test_bank_of_mixed_sizes_keeps_each_frame_fov():
    same = _yaw_cameras(torch.tensor([0.0, 20.0]))
    small = _yaw_cameras(torch.tensor([20.0]), height=24, width=32)
    bank = MemoryBank()
    bank.add(torch.zeros(1, 48, 64, 3), same[0], "input")
    bank.add(torch.zeros(1, 24, 32, 3), small, "panorama")
    cameras = bank.cameras()
    assert (cameras.height, cameras.width) == (48, 64)
    target = _yaw_cameras(torch.tensor([15.0]))
    assert torch.allclose(frustum_overlap_scores(target, cameras), frustum_overlap_scores(target, same), atol=1e-12)
    assert retrieve_references(target, bank).reference_indices.tolist() == [1]


def test_retrieval_rejects_an_empty_bank():
    with pytest.raises(InvalidInputError):
        retrieve_references(_yaw_cameras(torch.tensor([0.0])), MemoryBank())


# --- memory bank ----------------------------------------------------------------------------------
def test_bank_downsamples_generated_videos():
    bank = MemoryBank()
    assert bank.add(torch.rand(1, 48, 64, 3), _yaw_cameras(torch.tensor([0.0])), "input") == [0]
    video = torch.rand(81, 48, 64, 3)
    cameras = _yaw_cameras(torch.linspace(0.0, 80.0, 81))
    added = bank.add(video, cameras, "orbit", frames=range(0, 81, 4))
    assert added == list(range(1, 22)) and len(bank) == 22
    assert [bank[i].index for i in added] == list(range(0, 81, 4))
    assert bank.sources == ["input"] + ["orbit"] * 21 and bank.indices_of("orbit") == added
    assert torch.equal(bank[2].image, video[4]) and torch.equal(bank[2].camera.c2w, cameras.c2w[4:5])
    assert bank[2].image.untyped_storage().nbytes() == video[4].numel() * 4  # no view on the whole video


def test_bank_round_trips_through_a_directory_and_bytes(tmp_path):
    bank = MemoryBank()
    bank.add(torch.randint(0, 256, (2, 24, 32, 3), dtype=torch.uint8), _yaw_cameras(torch.tensor([0.0, 9.0]), 24, 32), "panorama")
    bank.add(torch.rand(9, 48, 64, 3), _yaw_cameras(torch.linspace(0.0, 40.0, 9)), "up", frames=range(0, 9, 2))
    bank.save(tmp_path / "bank")
    for restored in (MemoryBank.load(tmp_path / "bank"), MemoryBank.from_bytes(bank.to_bytes())):
        assert len(restored) == len(bank) == 7
        for a, b in zip(bank.frames, restored.frames):
            assert (a.source, a.index) == (b.source, b.index)
            assert a.image.dtype == b.image.dtype and torch.equal(a.image, b.image)
            assert torch.equal(a.camera.K, b.camera.K) and torch.equal(a.camera.c2w, b.camera.c2w)
            assert (a.camera.height, a.camera.width) == (b.camera.height, b.camera.width)
    empty = MemoryBank.from_bytes(MemoryBank().to_bytes())
    assert len(empty) == 0


def test_bank_rejects_bad_input(tmp_path):
    bank = MemoryBank()
    cameras = _yaw_cameras(torch.tensor([0.0, 1.0]))
    with pytest.raises(InvalidInputError):
        bank.add(torch.zeros(3, 48, 64, 3), cameras, "up")
    with pytest.raises(InvalidInputError):
        bank.add(torch.zeros(2, 48, 64, 3), cameras, "")
    with pytest.raises(InvalidInputError):
        bank.add(torch.zeros(2, 48, 64, 3), cameras, "up", frames=[2])
    with pytest.raises(InvalidInputError):
        MemoryBank.from_bytes(b"not an npz")
    with pytest.raises(InvalidInputError):
        MemoryBank.load(tmp_path)


# --- pointmaps ------------------------------------------------------------------------------------
def _plane_grid() -> torch.Tensor:
    """Points on the plane x = 3, spaced so that each lands in its own pixel in both test views."""
    ys, zs = torch.meshgrid(torch.linspace(-1.2, 1.2, 13, **F64), torch.linspace(-0.9, 0.9, 10, **F64), indexing="ij")
    return torch.stack([torch.full_like(ys, 3.0), ys, zs], dim=-1).reshape(-1, 3)


def test_pointmaps_encode_the_same_point_with_the_same_colour():
    points = _plane_grid()
    target = _camera((0.0, 0.0, 0.0), (3.0, 0.0, 0.0))
    reference = _camera((0.0, 0.8, 0.2), (3.0, 0.3, 0.0), height=36, width=48)
    pair = pointmap_pair(points, target, reference, radius=0)
    assert pair.target.shape == (48, 64, 3) and pair.reference.shape == (36, 48, 3)
    pixels = []
    for camera, valid in ((target, pair.target_valid), (reference, pair.reference_valid)):
        uv, z = camera.project(points)
        col, row = uv[0, :, 0].floor().long(), uv[0, :, 1].floor().long()
        assert (z > 0).all() and (col >= 0).all() and (col < camera.width).all() and (row < camera.height).all()
        assert len(torch.unique(row * camera.width + col)) == len(points)  # one pixel per point
        assert valid.sum() == len(points) and valid[row, col].all()
        pixels.append((row, col))
    (tr, tc), (rr, rc) = pixels
    assert torch.equal(pair.target[tr, tc], pair.reference[rr, rc])
    # the shared map is one isotropic affine function of xyz: colour differences = xyz differences / extent
    rgb_delta, xyz_delta = pair.target[tr, tc] - pair.target[tr[0], tc[0]], points - points[0]
    scale = (rgb_delta * xyz_delta).sum() / xyz_delta.square().sum()
    assert scale > 0 and torch.allclose(rgb_delta, scale * xyz_delta, atol=1e-12)
    assert pair.target.min() >= 0 and pair.target.max() <= 1
    assert (pair.target[~pair.target_valid] == 0).all() and (pair.reference[~pair.reference_valid] == 0).all()


def test_pointmap_pairs_are_normalised_per_pair():
    points = _plane_grid()
    targets = Camera.cat([_camera((0.0, 0.0, 0.0), (3.0, 0.0, 0.0)), _camera((0.0, 0.0, 0.0), (3.0, 1.0, 0.0))])
    references = Camera.cat([_camera((0.0, 0.5, 0.0), (3.0, 0.0, 0.0)), _camera((0.0, -0.5, 0.0), (3.0, 1.0, 0.0))])
    pairs = pointmap_pairs(points, targets, references, radius=0)
    assert pairs.target.shape == (2, 48, 64, 3) and pairs.reference_valid.shape == (2, 48, 64)
    for i in range(2):
        single = pointmap_pair(points, targets[i], references[i], radius=0)
        assert torch.equal(single.target, pairs.target[i]) and torch.equal(single.reference, pairs.reference[i])
        covered = torch.cat([pairs.target[i][pairs.target_valid[i]], pairs.reference[i][pairs.reference_valid[i]]])
        spans = covered.amax(0) - covered.amin(0)
        assert spans.max().item() == pytest.approx(1.0)  # the pair's largest extent fills [0, 1]
    with pytest.raises(InvalidInputError):
        pointmap_pairs(points, targets, references[:1])
