"""The WorldMirror export round-trips the memory bank: its cameras come back, one image per bank frame."""

import imageio.v3 as iio
import torch

from worldstereo.geometry.camera import Camera, look_at
from worldstereo.memory.bank import MemoryBank, frame_pngs
from worldstereo.pipeline.export_worldmirror import read_worldmirror_cameras, worldmirror_files, worldmirror_images


def test_worldmirror_export_round_trip():
    f64 = dict(dtype=torch.float64)
    eyes = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.1, 0.0], [1.0, 0.2, 0.3]], **f64)
    c2w = look_at(eyes, torch.tensor([0.0, 0.0, 4.0], **f64), torch.tensor([0.0, -1.0, 0.0], **f64))
    clip = Camera.from_fov(c2w, 16, 24, 60.0)
    bank = MemoryBank()
    generator = torch.Generator().manual_seed(0)
    bank.add(torch.rand(1, 20, 30, 3, generator=generator), Camera.from_fov(torch.eye(4, **f64)[None], 20, 30, 50.0), "input")
    bank.add(torch.rand(3, 16, 24, 3, generator=generator), clip, "eloop", frames=[1, 2])
    files = worldmirror_files(bank)
    assert sorted(files) == ["cameras.json", "name_map.json"]
    images = worldmirror_images(bank)
    assert images == ["images/input-0000.png", "images/eloop-0001.png", "images/eloop-0002.png"]
    files |= dict(zip(images, frame_pngs(bank.frames)))
    ids, c2w_back, K_back = read_worldmirror_cameras(files["cameras.json"])
    assert ids == ["input-0000", "eloop-0001", "eloop-0002"]
    for i, frame in enumerate(bank.frames):
        assert torch.allclose(c2w_back[i], frame.camera.c2w[0].double(), atol=1e-12)
        assert torch.allclose(K_back[i], frame.camera.K[0].double(), atol=1e-12)
        pixels = iio.imread(files[f"images/{ids[i]}.png"])
        assert pixels.shape == (frame.camera.height, frame.camera.width, 3)
        assert abs(pixels / 255.0 - frame.image.numpy()).max() <= 0.5 / 255 + 1e-6
    assert torch.allclose(c2w_back[1:], c2w[1:])  # camera-to-world, as WorldMirror reads them
