"""The released memory-bank and retrieval rules on constructed banks whose answers are worked out by hand."""

import math

import pytest
import torch

from worldstereo.geometry.camera import Camera, look_at
from worldstereo.memory.bank import MemoryBank, released_bank_indices
from worldstereo.memory.retrieval import frustum_corners, frustum_overlap_scores, retrieve_released
from worldstereo.memory.selection import image_quality, quality_aware_fps, select_references

F64 = dict(dtype=torch.float64)
UP = torch.tensor([0.0, 0.0, 1.0], **F64)
SQUARE_K = Camera.intrinsics(1.0, 1.0, 1.0, 1.0)[None]  # 2x2 image, 90 degree field of view


def _square(c2w: torch.Tensor) -> Camera:
    return Camera(SQUARE_K.expand(len(c2w), 3, 3), c2w, 2, 2)


def _yaw_cameras(yaws_deg: list[float], height: int = 24, width: int = 32) -> Camera:
    yaw = torch.deg2rad(torch.tensor(yaws_deg, **F64))
    forward = torch.stack([torch.cos(yaw), torch.sin(yaw), torch.zeros_like(yaw)], dim=-1)
    return Camera.from_fov(look_at(torch.zeros_like(forward), forward, UP), height, width, 60.0)


def _bank(cameras: Camera, seed: int = 0) -> MemoryBank:
    images = torch.rand(len(cameras), cameras.height, cameras.width, 3, generator=torch.Generator().manual_seed(seed))
    bank = MemoryBank()
    bank.add(images, cameras, "clip")
    return bank


def test_released_bank_indices():
    assert released_bank_indices(21, 8) == [3, 6, 9, 12, 14, 16, 18, 20]
    assert released_bank_indices(21, 4) == [5, 10, 15, 20]
    assert released_bank_indices(5, 8) == [1, 2, 3, 4]


def test_release_frusta_lie_at_distances_along_the_corner_rays():
    corners = frustum_corners(_square(torch.eye(4, **F64)[None]), 0.1, 10.0, along_rays=True)[0]
    assert torch.allclose(corners.norm(dim=-1), torch.tensor([0.1] * 4 + [10.0] * 4, **F64))
    assert torch.allclose(corners[4:], 10 / math.sqrt(3) * torch.tensor([[-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]], **F64))


def test_overlap_of_a_shifted_frustum_by_hand():
    """Boxes of side L = 20/sqrt(3) in x and y, shifted by L/3 along x: IoU = (L - L/3) / (L + L/3) = 0.5."""
    side = 20 / math.sqrt(3)
    shifted = torch.eye(4, **F64)[None].repeat(2, 1, 1)
    shifted[1, 0, 3] = side / 3
    scores = frustum_overlap_scores(_square(shifted[:1]), _square(shifted), 0.1, 10.0, along_rays=True)[0]
    assert scores.tolist() == pytest.approx([1.0, 0.5], abs=1e-12)


def test_angle_penalty_by_hand():
    """A camera turned by 120 degrees keeps its box IoU times exp(5 (90 - 120) / 180); 60 degrees is not damped."""
    targets = _yaw_cameras([0.0])
    eyes = torch.tensor([[0.0, 0.0, 0.0], [6.0, 0.0, 0.0]], **F64)  # the turned one stands inside the target's view
    yaw = torch.deg2rad(torch.tensor([60.0, 120.0], **F64))
    forward = torch.stack([torch.cos(yaw), torch.sin(yaw), torch.zeros_like(yaw)], dim=-1)
    memory = Camera.from_fov(look_at(eyes, eyes + forward, UP), 24, 32, 60.0)
    scores = frustum_overlap_scores(targets, memory, 0.1, 10.0, along_rays=True)[0]
    t = frustum_corners(targets, 0.1, 10.0, along_rays=True)[0]
    for j, angle in enumerate((60.0, 120.0)):
        m = frustum_corners(memory[j : j + 1], 0.1, 10.0, along_rays=True)[0]
        inter = (torch.minimum(t.amax(0), m.amax(0)) - torch.maximum(t.amin(0), m.amin(0))).clamp(min=0).prod()
        iou = inter / ((t.amax(0) - t.amin(0)).prod() + (m.amax(0) - m.amin(0)).prod() - inter)
        weight = min(1.0, math.exp(5 * (90 - angle) / 180))
        assert scores[j].item() == pytest.approx(iou.item() * weight, rel=1e-9)
    assert (scores > 0).all()


def test_one_reference_per_target_frame_and_first_chosen_slots():
    """A 21-frame pan 0..80 degrees over a bank at 0, 30, 60, 90: each frame takes the nearest yaw."""
    clip = _yaw_cameras([4.0 * i for i in range(21)])
    bank = _bank(_yaw_cameras([0.0, 30.0, 60.0, 90.0]))
    retrieval = retrieve_released(clip, bank)
    assert retrieval.target_indices.tolist() == list(range(1, 21))
    expected = [0] * 3 + [1] * 8 + [2] * 7 + [3] * 2  # frames 1-3, 4-11, 12-18, 19-20
    assert retrieval.reference_indices.tolist() == expected
    references, slots = retrieval.first_chosen()
    assert references.tolist() == [0, 1, 2, 3] and slots.tolist() == [0, 3, 11, 18]


def test_an_81_pose_clip_targets_every_fourth_pose():
    clip = _yaw_cameras([1.0 * i for i in range(81)])
    retrieval = retrieve_released(clip, _bank(_yaw_cameras([0.0, 40.0, 80.0])))
    assert retrieval.target_indices.tolist() == list(range(4, 81, 4))


def test_more_than_eight_references_are_reduced_deterministically():
    """20 targets each matching its own bank frame: FPS keeps 8 and every target is re-assigned among them."""
    yaws = [6.0 * i for i in range(21)]
    clip = _yaw_cameras(yaws)
    bank = _bank(_yaw_cameras(yaws[1:]), seed=3)
    first = retrieve_released(clip, bank, max_references=8)
    again = retrieve_released(clip, bank, max_references=8)
    kept = first.distinct_references
    assert len(kept) == 8
    assert torch.equal(first.reference_indices, again.reference_indices)
    assert torch.equal(first.reference_indices, kept[first.score_matrix[:, kept].argmax(dim=1)])
    uncapped = retrieve_released(clip, bank, max_references=20)
    assert uncapped.reference_indices.tolist() == list(range(20))


def test_quality_aware_fps_by_hand():
    features = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]], **F64)
    equal = torch.zeros(5, **F64)
    assert quality_aware_fps(features, equal, 3).tolist() == [3, 4, 0]  # nearest the centroid 3.2, then furthest
    symmetric = torch.tensor([[-1.0], [1.0]], **F64)
    assert quality_aware_fps(symmetric, torch.tensor([0.0, 1.0], **F64), 1).tolist() == [1]  # quality breaks the tie
    assert quality_aware_fps(symmetric, torch.tensor([1.0, 0.0], **F64), 1).tolist() == [0]


def test_image_quality_prefers_detail():
    flat = torch.full((1, 16, 16, 3), 0.5)
    checker = ((torch.arange(16)[:, None] + torch.arange(16)[None]) % 2).float()[None, :, :, None].expand(1, 16, 16, 3)
    flat_q, checker_q = image_quality(flat).item(), image_quality(checker).item()
    assert flat_q == pytest.approx(0.0, abs=1e-5)
    # two grey levels (1 bit), std 127.5, Laplacian of +-4 * 255
    expected = 0.4 * math.log1p((4 * 255) ** 2) + 0.3 * 1.0 + 0.3 * 127.5 / 128
    assert checker_q == pytest.approx(expected, rel=1e-6)


def test_dinov2_features_from_a_local_directory(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    from worldstereo.memory.dinov2 import Dinov2Features

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                          image_size=28, patch_size=14)
    Dinov2Model(config).save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text('{"size": {"shortest_edge": 32}, "crop_size": {"height": 28, "width": 28}}')
    encoder = Dinov2Features(tmp_path)
    images = torch.rand(3, 24, 32, 3, generator=torch.Generator().manual_seed(1))
    features = encoder(images)
    assert features.shape == (3, 32) and torch.isfinite(features).all()
    assert encoder.preprocess(images).shape == (3, 3, 28, 28)
    cameras = _yaw_cameras([0.0, 10.0, 20.0])
    picked = select_references(cameras, list(images), 2, encoder)
    assert torch.equal(picked, select_references(cameras, list(images), 2, encoder)) and len(set(picked.tolist())) == 2
