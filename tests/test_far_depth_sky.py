"""Any photo reaches a fused scene: far depth compressed as the release does, sky marked as no surface (a tiny
random SegFormer in its hub layout, or the heuristic), depth spanning 1e-3 to 1e4 m, every decodable photo mode
through a tiny random DepthPro."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_weights import write_depth_pro

from worldstereo.config import ModelPaths, Settings, SplatSettings, StorageSettings, TrajectorySettings
from worldstereo.geometry.camera import Camera
from worldstereo.geometry.far_depth import compress_far, compress_far_points
from worldstereo.geometry.ply import read_ply
from worldstereo.pipeline.depth.sky import load_segmenter, open_far_pixels, sky_mask
from worldstereo.pipeline.local import process_scene, read_input
from worldstereo.storage.factory import open_store
from worldstereo.synthetic import make_scene

F64 = torch.float64
HEIGHT, WIDTH = 72, 112


def test_far_depth_is_compressed_per_image_beyond_8_medians() -> None:
    depth = torch.full((2, 4, 4), 2.0, dtype=F64)
    depth[1] *= 10  # its own median, 20
    depth[:, 0, 0], depth[:, 0, 1], depth[:, 0, 2] = 1e4, math.inf, 15.0
    out = compress_far(depth, 8.0)
    for image, m in ((0, 16.0), (1, 160.0)):
        assert out[image, 0, 0] == pytest.approx(2 * m - m * m / 1e4)  # Eq.: d' = 2m - m²/d
        assert out[image, 0, 1] == math.inf  # no surface stays no surface
    assert out[0, 0, 2] == 15.0 and out[1, 0, 2] == 15.0  # below m: unchanged
    assert torch.equal(out[:, 1:], depth[:, 1:]) and torch.equal(compress_far(depth, None), depth)


def test_compressed_points_are_the_back_projection_of_compressed_depth() -> None:
    g = torch.Generator().manual_seed(0)
    c2w = torch.eye(4, dtype=F64).repeat(2, 1, 1)
    c2w[1, :3, 3] = torch.tensor([0.5, -0.2, 3.0], dtype=F64)
    c2w[1, :3, :3] = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=F64))[0] * torch.tensor([1, 1, -1.0])
    if torch.linalg.det(c2w[1, :3, :3]) < 0:
        c2w[1, :3, 0] *= -1
    cameras = Camera.from_fov(c2w, 24, 32, 60.0)
    depth = 10 ** (torch.rand(2, 24, 32, generator=g, dtype=F64) * 7 - 3)  # 1e-3 .. 1e4 m
    valid = torch.ones(2, 24, 32, dtype=torch.bool)
    moved = compress_far_points(cameras.backproject(depth), valid, cameras, 8.0)
    expected = cameras.backproject(compress_far(depth, 8.0))
    assert float(((moved - expected).norm(dim=-1) / expected.norm(dim=-1).clamp_min(1)).max()) < 1e-9


def test_heuristic_sky_is_the_far_region_open_to_the_top() -> None:
    depth = torch.full((20, 30), 2.0, dtype=F64)
    depth[:6] = math.inf  # open sky ...
    depth[:8, 20:] = 1e4  # ... reaching lower on the right, at DepthPro's clamp
    depth[12:15, 5:10] = 1e4  # a far window seen through a wall: not sky
    sky = open_far_pixels(depth, 50.0)
    expected = torch.zeros(20, 30, dtype=torch.bool)
    expected[:6], expected[:8, 20:] = True, True
    assert torch.equal(sky, expected)
    assert not open_far_pixels(torch.full((4, 4), 3.0, dtype=F64), 50.0).any()


def settings_for(root: Path, **update) -> Settings:
    presets = TrajectorySettings(planner="presets", num_frames=5, order=("orbit",))
    return Settings(storage=StorageSettings(backend="local", root=root), device="cpu", generator="warp",
                    resolution_scale=0.25, **{"trajectory": presets, **update})


def run(settings: Settings, name: str, image: bytes, depth: np.ndarray | None = None, fmt: str = "png") -> dict:
    store = open_store(settings.storage)
    bucket = settings.storage.input_bucket
    if depth is not None:
        buffer = io.BytesIO()
        np.save(buffer, depth)
        store.put_bytes(bucket, f"{name}.depth.npy", buffer.getvalue())
    store.put_bytes(bucket, f"{name}.{fmt}", image)
    return process_scene(store, name, read_input(store, bucket, f"{name}.{fmt}", settings), settings)


def room_rgb() -> np.ndarray:
    scene = make_scene("room", 0)
    return (scene.render(scene.input_camera(HEIGHT, WIDTH)).rgb[0].numpy() * 255).round().astype(np.uint8)


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_depth_from_1_mm_to_10_km_with_a_sky_reaches_a_fused_scene(tmp_path: Path) -> None:
    rows = torch.linspace(0, 1, HEIGHT, dtype=F64)[:, None].expand(HEIGHT, WIDTH)
    depth = 10 ** (4 - 7 * rows)  # 1e4 m at the top row down to 1e-3 m at the bottom
    depth = depth * (1 + 0.1 * torch.linspace(0, 1, WIDTH, dtype=F64))
    depth[:10] = math.inf  # sky: no surface
    explore = TrajectorySettings(num_frames=5, order=("orbit",))  # the default planner: one path
    summary = run(settings_for(tmp_path, trajectory=explore), "wide", encode(Image.fromarray(room_rgb()), "PNG"),
                  depth.numpy())
    assert explore.planner == "explore" and len(summary["trajectories"]) == 1  # nothing scores: it still runs one
    masked, far = summary["init"]["depth"]["masked"], summary["init"]["depth"]["far_depth"]
    assert masked["method"] == "heuristic" and masked["sky_fraction"] > 10 / HEIGHT  # the sky, and the far rows below
    median = float(depth[~open_far_pixels(depth, 50.0)].median())
    assert far["ratio"] == 8.0 and far["limit"] == pytest.approx(8 * median, rel=1e-6) and far["fraction"] > 0
    fused = read_ply((tmp_path / "worldstereo-work/scenes/wide/outputs/exports/fused.ply").read_bytes())
    points = np.stack([fused["x"], fused["y"], fused["z"]], axis=1)
    assert len(points) == summary["fused_points"] > 1000 and np.isfinite(points).all()
    assert points[:, 2].max() < 2 * far["limit"]  # the input camera's z-depth, compressed below 2m


def test_the_sky_segmenter_marks_its_sky_class(tmp_path: Path, sky_segmenter: Path) -> None:
    settings = settings_for(tmp_path, models=ModelPaths(sky_segmenter=sky_segmenter))
    rgb = torch.from_numpy(room_rgb()).float() / 255
    depth = torch.full((HEIGHT, WIDTH), 2.0, dtype=F64)
    sky, method = sky_mask(settings, rgb, depth)
    assert method == "segmenter" and 0.05 < float(sky.float().mean()) < 0.95
    from transformers import SegformerImageProcessorPil  # the checkpoint's own pre- and post-processing

    segmenter = load_segmenter(sky_segmenter, "cpu")
    processor = SegformerImageProcessorPil.from_pretrained(sky_segmenter)
    inputs = processor(images=Image.fromarray(room_rgb()), return_tensors="pt")
    with torch.no_grad():
        output = segmenter.model(**inputs)
    reference = processor.post_process_semantic_segmentation(output, target_sizes=[(HEIGHT, WIDTH)])[0] == 2
    assert float((sky == reference).float().mean()) > 0.9
    summary = run(settings, "segmented", encode(Image.fromarray(room_rgb()), "PNG"), depth.numpy())
    assert summary["init"]["depth"]["masked"] == {"sky_fraction": float(sky.float().mean()), "method": "segmenter"}


@pytest.fixture(scope="module")
def sky_segmenter(tmp_path_factory) -> Path:
    """A tiny random SegFormer with ADE20K's first labels (sky = 2), its sky logit biased to win on about half
    of the room photo, saved with its preprocessor in the hub layout."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessorPil

    torch.manual_seed(0)
    labels = {0: "wall", 1: "building", 2: "sky", 3: "floor"}
    config = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                             patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2],
                             decoder_hidden_size=16, num_labels=4, id2label=labels,
                             label2id={v: k for k, v in labels.items()})
    model = SegformerForSemanticSegmentation(config).eval()
    directory = tmp_path_factory.mktemp("segformer-ade")
    SegformerImageProcessorPil(size={"height": 64, "width": 64}).save_pretrained(directory)
    model.save_pretrained(directory)
    segmenter = load_segmenter.__wrapped__(directory, "cpu")  # not the cached one: the weights change below
    classifier = segmenter.model.decode_head.classifier
    with torch.no_grad():
        classifier.weight[2] *= 20  # clear margins between the classes
        logits = segmenter.logits(torch.from_numpy(room_rgb()).float() / 255)
        classifier.bias[2] -= float((logits[2] - logits[[0, 1, 3]].amax(dim=0)).median())
    segmenter.model.save_pretrained(directory)
    return directory


# one photo per decoding path of the input reader: bilevel, grey with alpha, palette, 16-bit grey, CMYK, RGB, RGBA
PHOTO_MODES = [("1", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("I;16", "PNG"), ("CMYK", "JPEG"), ("RGB", "JPEG"),
               ("RGBA", "WEBP")]


@pytest.mark.slow
def test_photos_of_every_mode_reach_a_fused_scene_through_a_random_depth_pro(tmp_path: Path) -> None:
    weights = write_depth_pro(tmp_path / "DepthPro-hf", random_depth=True)
    settings = settings_for(tmp_path / "store", models=ModelPaths(depth_pro=weights),
                            splat=SplatSettings(enabled=False))  # the splats of a far scene: the test above
    photo = Image.fromarray(room_rgb())
    for mode, fmt in PHOTO_MODES:
        image = photo.convert(mode) if mode != "I;16" else Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257)
        name = f"photo-{mode.replace(';', '').lower()}-{fmt.lower()}"
        summary = run(settings, name, encode(image, fmt), fmt=fmt.lower().replace("jpeg", "jpg"))
        far = summary["init"]["depth"]["far_depth"]
        assert summary["fused_points"] > 0 and far["fraction"] > 0, (mode, fmt)  # a random DepthPro: far depth
