"""Scene snapshots: memory-bank frames come back bit for bit (as PNG bytes, decoded on use), the export copies
those bytes, and snapshots that hold the frames as uint8 arrays still load."""

import io
import json

import numpy as np
import torch
from PIL import Image

from worldstereo.config import Settings, StorageSettings, TrajectorySettings
from worldstereo.inputs import SceneInput
from worldstereo.memory.bank import MemoryBank
from worldstereo.memory.cache import Cache3D
from worldstereo.pipeline.backends import DepthEstimate
from worldstereo.pipeline.exports import run_export
from worldstereo.pipeline.scene import INIT, SceneContext, initial_state
from worldstereo.png import quantize
from worldstereo.storage.factory import open_store
from worldstereo.synthetic import make_scene


def _scene(tmp_path) -> tuple[SceneContext, torch.Tensor]:
    """The synthetic room's init snapshot, then an ``orbit`` delta adding 3 frames and 50 points; the frames."""
    settings = Settings(storage=StorageSettings(backend="local", root=tmp_path), resolution_scale=0.1, device="cpu",
                        trajectory=TrajectorySettings(planner="presets", num_frames=5))
    scene = make_scene("room", 0)
    camera = scene.input_camera(120, 192)
    views = scene.render(camera)
    ctx = SceneContext(open_store(settings.storage), settings.storage.work_bucket, "room", settings)
    scene_input = SceneInput("perspective", views.rgb[0].float(), views.depth[0].double(), camera, None)
    ctx.states.save(INIT, initial_state(ctx, scene_input, DepthEstimate(scene_input.depth, camera)))
    state = ctx.states.load(INIT)
    name, _, trajectory = state.plans[0]
    generator = torch.Generator().manual_seed(0)
    frames = torch.rand(len(trajectory), *state.starts[0].image.shape, generator=generator)
    state.bank.add(frames, trajectory.cameras, name, frames=[1, 2, 4])
    cache = state.cache
    state.cache = Cache3D(torch.cat([cache.points, torch.rand(50, 3, generator=generator)]),
                          torch.cat([cache.colors, torch.rand(50, 3, generator=generator)]),
                          torch.cat([cache.sources, torch.ones(50, dtype=torch.long)]), [*cache.names, name],
                          cache.voxel_size)
    ctx.states.save(name, state)
    return ctx, torch.cat([quantize(state.starts[0].image)[None], quantize(frames[[1, 2, 4]])])


def test_snapshots_give_back_the_8_bit_bank_frames_and_the_export_their_png_bytes(tmp_path):
    ctx, expected = _scene(tmp_path)
    state = ctx.states.load("orbit")
    assert all(isinstance(f.pixels, bytes) for f in state.bank.frames) and len(state.bank) == 4
    assert not any("image" in vars(f) for f in state.bank.frames)  # nothing decoded yet
    assert torch.equal(torch.stack([f.image for f in state.bank.frames]), expected.float() / 255)
    assert len(state.cache) == len(ctx.states.load(INIT).cache) + 50

    run_export(ctx, ["orbit"])
    get = lambda *key: ctx.store.get_bytes(ctx.bucket, ctx.states.key("exports", *key))  # noqa: E731
    transforms = json.loads(get("transforms.json"))
    paths = [frame["file_path"] for frame in transforms["frames"]]
    assert paths == ["images/input_000.png", "images/orbit_001.png", "images/orbit_002.png", "images/orbit_004.png"]
    for path, frame, pixels in zip(paths, state.bank.frames, expected):
        assert get(*path.split("/")) == frame.pixels == get("world_mirror", "images", f"{frame.source}-{frame.index:04d}.png")
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(get(*path.split("/"))))), pixels.numpy())
    names = [line.split()[-1] for line in get("colmap", "images.txt").decode().splitlines()[3::2]]
    assert names == [path.split("/")[1] for path in paths]


def test_snapshots_with_uint8_bank_arrays_still_load(tmp_path):
    ctx, _ = _scene(tmp_path)
    current = ctx.states.load("orbit")
    _rewrite_with_uint8_arrays(ctx)
    old = ctx.states.load("orbit")
    assert [(f.source, f.index) for f in old.bank.frames] == [(f.source, f.index) for f in current.bank.frames]
    for a, b in zip(old.bank.frames, current.bank.frames):
        assert a.pixels.dtype == torch.uint8 and torch.equal(a.image, b.image) and a.png == b.png
        assert torch.equal(a.camera.K, b.camera.K) and torch.equal(a.camera.c2w, b.camera.c2w)
    assert torch.equal(old.cache.points, current.cache.points) and old.plans[0][0] == current.plans[0][0]


def _rewrite_with_uint8_arrays(ctx: SceneContext) -> None:
    """The layout snapshots had before PNG frames: init's bank as a saved MemoryBank, one array per frame in a delta."""
    init = ctx.states.load(INIT)
    bank = MemoryBank(tuple(type(f)(f.decoded(), f.camera, f.source, f.index) for f in init.bank.frames))
    ctx.store.put_bytes(ctx.bucket, ctx.states.key("state", INIT, "bank.npz"), bank.to_bytes())
    meta_key = ctx.states.key("state", INIT, "state.json")
    meta = json.loads(ctx.store.get_bytes(ctx.bucket, meta_key))
    del meta["frames"]
    ctx.store.put_bytes(ctx.bucket, meta_key, json.dumps(meta).encode())

    delta = dict(np.load(io.BytesIO(ctx.store.get_bytes(ctx.bucket, ctx.states.key("state", "orbit", "delta.npz")))))
    frames = ctx.states.load("orbit").bank.frames[len(init.bank):]
    arrays = {k: delta[k] for k in ("points", "colors", "sources")}
    for i, frame in enumerate(frames):
        arrays |= {f"image_{i:06d}": frame.decoded().numpy(), f"camera_{i:06d}_K": frame.camera.K.numpy(),
                   f"camera_{i:06d}_c2w": frame.camera.c2w.numpy(),
                   f"camera_{i:06d}_size": np.array([frame.camera.height, frame.camera.width])}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    ctx.store.put_bytes(ctx.bucket, ctx.states.key("state", "orbit", "delta.npz"), buffer.getvalue())
