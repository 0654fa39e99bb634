"""WorldStereo video model: branch wiring, SSM pair isolation, full-size shapes, generation, loading, offload."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from worldstereo.bench.dmd import synthetic_clip
from worldstereo.bench.ssm import format_report, run_ssm_benchmark
from worldstereo.config import ModelPaths, Settings
from worldstereo.errors import ConfigurationError, InvalidInputError
from worldstereo.models import (
    BranchConfig,
    CameraControlNet,
    SpatialStereoMemory,
    WorldStereoModel,
    full_config,
    tiny_config,
)
from worldstereo.models.loading import Placement
from worldstereo.models.paper.camera_controlnet import CameraConditionEmbedding
from worldstereo.models.paper.conditioning import CameraGuidance, Conditioning, StereoMemory
from worldstereo.models.rope import PositionalRotaryEmbed, grid_positions, stitched_positions
from worldstereo.models.wan import latent_frame_indices

SIZE = 32  # tiny clips: 32 x 32 pixels -> 4 x 4 latents -> 2 x 2 tokens per frame


pytestmark = pytest.mark.usefixtures("one_thread")


def randomise(module: nn.Module, seed: int) -> None:
    """Give zero-initialised read-outs random weights so a branch actually changes the backbone."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)


def readouts(branch: CameraControlNet | SpatialStereoMemory) -> list[nn.Module]:
    modules: list[nn.Module] = [branch.trunk.proj_out]
    if isinstance(branch, CameraControlNet):
        modules.append(branch.condition_embedding.project)
    return modules


def tiny_model(seed: int = 0) -> WorldStereoModel:
    torch.manual_seed(seed)
    return WorldStereoModel.from_config(tiny_config())


def clip_inputs(model: WorldStereoModel, frames: int = 5, seed: int = 0) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """``generate`` keyword arguments (without prompts), and the prompt and negative prompt embeddings."""
    clip = synthetic_clip(model, frames, SIZE, SIZE, seed)
    return clip, clip.pop("prompt_embeds"), clip.pop("negative_prompt_embeds")


# --- rotary positions -------------------------------------------------------------------------
def test_rotary_positions_on_a_grid_are_wans():
    rope = PositionalRotaryEmbed(16, (1, 2, 2), 1024)
    cos, sin = rope(torch.zeros(1, 4, 3, 8, 10))
    positions = grid_positions(torch.arange(3), 4, 5).reshape(1, -1, 3)
    at_cos, at_sin = rope.at(positions)
    assert torch.equal(at_cos, cos) and torch.equal(at_sin, sin)


def test_stitched_reference_continues_the_width_axis():
    positions = stitched_positions(torch.tensor([2, 5]), 3, 4).reshape(2, 3, 8, 3)
    target, reference = positions[:, :, :4], positions[:, :, 4:]
    assert torch.equal(reference[..., 0], target[..., 0]) and torch.equal(reference[..., 1], target[..., 1])
    assert torch.equal(reference[..., 2], target[..., 2] + 4)
    assert positions[0, ..., 0].unique().tolist() == [2] and positions[1, ..., 0].unique().tolist() == [5]
    assert target[0, 1, :, 2].tolist() == [0, 1, 2, 3]


# --- conditioning -----------------------------------------------------------------------------
def test_latent_frames_follow_the_causal_vae():
    assert latent_frame_indices(torch.tensor([0, 1, 4, 5, 8, 80])).tolist() == [0, 1, 1, 2, 2, 20]


def test_camera_condition_embedding_is_aligned_with_latent_frames():
    embed = CameraConditionEmbedding(7, 8, 16, temporal=4, spatial=8, patch_size=(1, 2, 2))
    condition = torch.randn(1, 7, 9, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    assert torch.equal(embed(condition), torch.zeros(1, 3 * 2 * 2, 16))  # zero-initialised output
    randomise(embed.project, 1)
    embed.encode[1] = nn.Identity()  # GroupNorm's statistics span the clip; the cells themselves are local
    base = embed(condition).reshape(3, 4, 16)
    for frame, latent in [(0, 0), (1, 1), (4, 1), (5, 2), (8, 2)]:
        changed = condition.clone()
        changed[:, :, frame] += 1
        diff = (embed(changed).reshape(3, 4, 16) != base).flatten(1).any(dim=1)
        assert diff.tolist() == [t == latent for t in range(3)], (frame, diff)


# --- branch wiring ----------------------------------------------------------------------------
def random_conditioning(latent_frames: int = 3, targets: tuple[int, ...] = (1, 2), memory: bool = True,
                        seed: int = 0) -> Conditioning:
    """Latent-space conditioning of a tiny clip (4 x 4 latents) without going through the VAE."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    frames = 1 + 4 * (latent_frames - 1)
    image_condition = torch.cat([torch.zeros(1, 4, latent_frames, 4, 4), randn(1, 16, latent_frames, 4, 4)], 1)
    image_condition[:, :4, 0] = 1
    camera = CameraGuidance(randn(1, 16, latent_frames, 4, 4), randn(1, 7, frames, SIZE, SIZE))
    stereo = StereoMemory(randn(1, 16, len(targets), 4, 4), randn(1, 16, len(targets), 4, 8), torch.tensor(targets))
    return Conditioning(image_condition, randn(1, 4, 8), camera, stereo if memory else None)


def run_transformer(model: WorldStereoModel, conditioning: Conditioning) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Velocity and the input of every backbone block for fixed latents, timestep and prompt."""
    generator = torch.Generator().manual_seed(3)
    latents = torch.randn(1, 16, *conditioning.latent_shape, generator=generator)
    prompt = torch.randn(1, 512, 16, generator=generator)
    inputs: list[torch.Tensor] = []
    hooks = [
        block.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].clone()))
        for block in model.transformer.backbone.blocks
    ]
    with torch.inference_mode():
        velocity = model.transformer(latents, torch.tensor([700.0]), prompt, conditioning)
    for hook in hooks:
        hook.remove()
    return velocity, inputs


def test_zero_initialised_branches_leave_the_backbone_bit_identical():
    model = tiny_model()
    conditioning = random_conditioning()
    ran = []
    for branch in (model.transformer.camera, model.transformer.ssm):
        branch.trunk.blocks[-1].register_forward_hook(lambda *_: ran.append(True))
    out, _ = run_transformer(model, conditioning)
    assert len(ran) == 2  # both branches ran to their last block
    plain, _ = run_transformer(model, replace(conditioning, camera=None, memory=None))
    assert not ran[2:]  # ... and not without their conditions
    generator = torch.Generator().manual_seed(3)  # the same inputs, straight through diffusers' model
    latents, prompt = torch.randn(1, 16, 3, 4, 4, generator=generator), torch.randn(1, 512, 16, generator=generator)
    with torch.inference_mode():
        hidden = torch.cat([latents, conditioning.image_condition], dim=1)
        backbone = model.transformer.backbone(hidden, torch.tensor([700.0]), prompt, conditioning.image_embeds)[0]
    assert torch.equal(out, backbone) and torch.equal(plain, backbone)


def test_camera_block_outputs_are_added_after_their_mapped_backbone_blocks():
    torch.manual_seed(0)
    camera = BranchConfig(num_layers=2, num_heads=2, head_dim=8, ffn_dim=32, inject_layers=(1, 3))
    model = WorldStereoModel.from_config(replace(tiny_config(), camera=camera))
    conditioning = random_conditioning(memory=False)
    _, before = run_transformer(model, conditioning)
    for module in readouts(model.transformer.camera):
        randomise(module, 7)
    _, after = run_transformer(model, conditioning)
    same = [torch.equal(a, b) for a, b in zip(before, after)]
    assert same == [True, True, False, False]  # the first injection, after block 1, reaches block 2's input


def test_ssm_residuals_reach_only_the_target_latent_frames():
    model = tiny_model()
    conditioning = replace(random_conditioning(targets=(1,)), camera=None)
    _, before = run_transformer(model, conditioning)
    randomise(model.transformer.ssm.trunk.proj_out, 5)
    _, after = run_transformer(model, conditioning)
    # block 1's input is the backbone state after the SSM's first injection, per latent frame
    changed = [not torch.equal(a, b) for a, b in zip(before[1].reshape(3, 4, -1), after[1].reshape(3, 4, -1))]
    assert changed == [False, True, False]


def ssm_residuals(ssm: SpatialStereoMemory, references: torch.Tensor, attention: str) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(11)
    targets = torch.randn(1, 16, 3, 4, 6, generator=generator)
    pointmaps = torch.randn(1, 16, 3, 4, 12, generator=generator)
    temb, context = torch.randn(1, 32, generator=generator), torch.randn(1, 5, 32, generator=generator)
    frames = torch.tensor([1, 2, 4])
    with torch.inference_mode():
        return [r.tokens for r in ssm.residuals(targets, references, pointmaps, frames, temb, context, attention)]


@pytest.mark.parametrize("attention", ["pair", "joint"])
def test_ssm_pairs_attend_only_to_their_own_reference(attention):
    torch.manual_seed(0)
    ssm = SpatialStereoMemory(backbone_dim=32, dim=16, num_heads=2, ffn_dim=32, num_layers=2).eval()
    randomise(ssm.trunk.proj_out, 3)
    references = torch.randn(1, 16, 3, 4, 6, generator=torch.Generator().manual_seed(1))
    perturbed = references.clone()
    perturbed[:, :, 1] += 1.0  # only reference j = 1
    base, moved = ssm_residuals(ssm, references, attention), ssm_residuals(ssm, perturbed, attention)
    assert base[0].shape == (1, 3, 2 * 3, 32)  # [B, F, h' * w', backbone_dim]: target tokens only
    for a, b in zip(base, moved):
        changed = [not torch.equal(a[:, f], b[:, f]) for f in range(3)]
        assert changed == ([False, True, False] if attention == "pair" else [True, True, True])


# --- full size --------------------------------------------------------------------------------
def test_paper_setting_480x768_81_frames_on_meta():
    model = WorldStereoModel.from_config(full_config(), device="meta", dtype=torch.bfloat16)
    backbone = model.transformer.backbone
    assert sum(p.numel() for p in backbone.parameters()) > 14e9
    assert len(model.transformer.camera.trunk.blocks) == len(model.transformer.ssm.trunk.blocks) == 20

    def meta(*shape: int) -> torch.Tensor:
        return torch.empty(*shape, device="meta")

    frames, height, width, targets = 81, 480, 768, 20
    conditioning = model.encode(
        meta(height, width, 3),
        meta(frames, height, width, 3),
        meta(frames, height, width),
        meta(frames, 6, height, width),
        image_embeds=meta(257, 1280), references=meta(targets, height, width, 3),
        pointmaps=(meta(targets, height, width, 3), meta(targets, height, width, 3)),
        target_indices=list(range(4, 81, 4)),
    )
    assert conditioning.image_condition.shape == (1, 20, 21, 60, 96)
    assert conditioning.camera.render_latents.shape == (1, 16, 21, 60, 96)
    assert conditioning.camera.camera_condition.shape == (1, 7, 81, 480, 768)
    assert conditioning.memory.reference_latents.shape == (1, 16, 20, 60, 96)
    assert conditioning.memory.pointmap_latents.shape == (1, 16, 20, 60, 192)
    residual_shapes = {}
    for name in ("camera", "ssm"):
        getattr(model.transformer, name).trunk.proj_out[0].register_forward_hook(
            lambda _m, _a, out, name=name: residual_shapes.update({name: tuple(out.shape)})
        )
    latents = model.sample(conditioning, meta(512, 4096), sampler="dmd", steps=1)
    assert latents.shape == (1, 16, 21, 60, 96)
    assert residual_shapes == {"camera": (1, 21 * 30 * 48, 5120), "ssm": (1, 20, 30 * 48, 5120)}


# --- generation -------------------------------------------------------------------------------
def test_generate_end_to_end_returns_frames_in_range():
    model = tiny_model()
    clip, prompt, _ = clip_inputs(model, frames=5)
    frames = model.generate(prompt_embeds=prompt, seed=1, **clip)
    assert frames.shape == (5, SIZE, SIZE, 3) and frames.dtype == torch.float32
    assert bool(torch.isfinite(frames).all()) and frames.min() >= 0 and frames.max() <= 1 and frames.std() > 0


def test_sampling_is_seeded():
    model, conditioning = tiny_model(), random_conditioning()
    prompt = torch.randn(512, 16, generator=torch.Generator().manual_seed(1))
    first = model.sample(conditioning, prompt, seed=1)
    assert first.shape == (1, 16, 3, 4, 4)
    assert torch.equal(model.sample(conditioning, prompt, seed=1), first)
    assert not torch.equal(model.sample(conditioning, prompt, seed=2), first)


def test_samplers_call_the_transformer_4_times_without_cfg_and_2x_steps_with_it():
    model, conditioning = tiny_model(), random_conditioning()
    generator = torch.Generator().manual_seed(1)
    prompt, negative = torch.randn(512, 16, generator=generator), torch.randn(512, 16, generator=generator)
    prompts: list[torch.Tensor] = []
    model.transformer.register_forward_hook(lambda _m, args, _out: prompts.append(args[2][0]))

    def which() -> list[str]:
        names = ["cond" if torch.equal(p, prompt) else "uncond" if torch.equal(p, negative) else "?" for p in prompts]
        prompts.clear()
        return names

    model.sample(conditioning, prompt, negative_prompt_embeds=negative, sampler="dmd")
    assert which() == ["cond"] * 4
    model.sample(conditioning, prompt, negative_prompt_embeds=negative, sampler="flow", steps=3, guidance=5.0)
    assert sorted(which()) == ["cond"] * 3 + ["uncond"] * 3
    model.sample(conditioning, prompt, sampler="flow", steps=3, guidance=1.0)
    assert which() == ["cond"] * 3


def test_bad_inputs_are_rejected():
    model = tiny_model()
    clip, prompt, _ = clip_inputs(model)
    with pytest.raises(InvalidInputError, match="1 \\+ 4k"):
        model.generate(**(clip | {"cache_renders": clip["cache_renders"][:4]}), prompt_embeds=prompt)
    with pytest.raises(InvalidInputError, match="multiple of 16"):
        model.generate(**(clip | {"image": clip["image"][:24]}), prompt_embeds=prompt)
    with pytest.raises(InvalidInputError, match="image_embeds"):
        model.generate(**(clip | {"image_embeds": None}), prompt_embeds=prompt)
    with pytest.raises(InvalidInputError, match="come together"):
        model.generate(**(clip | {"pointmaps": None}), prompt_embeds=prompt)
    with pytest.raises(InvalidInputError, match="target_indices"):
        model.generate(**(clip | {"target_indices": [7]}), prompt_embeds=prompt)
    with pytest.raises(InvalidInputError, match="negative_prompt_embeds"):
        model.generate(**clip, prompt_embeds=prompt, sampler="flow", steps=2)
    with pytest.raises(InvalidInputError, match="512 tokens"):
        model.generate(**clip, prompt_embeds=prompt[:77])


# --- loading, saving, offload -----------------------------------------------------------------
def test_save_then_load_reproduces_generation(tmp_path: Path):
    model = tiny_model(seed=4)
    for branch in (model.transformer.camera, model.transformer.ssm):
        for module in readouts(branch):
            randomise(module, 9)
    clip, prompt, _ = clip_inputs(model, seed=2)
    expected = model.generate(prompt_embeds=prompt, seed=5, **clip)

    model.save_pretrained(tmp_path / "all")
    for part in ("transformer", "vae", "camera", "ssm"):
        assert (tmp_path / "all" / part / "config.json").is_file()
        assert (tmp_path / "all" / part / "diffusion_pytorch_model.safetensors").is_file()
    loaded = WorldStereoModel.from_pretrained(tmp_path / "all", dtype=torch.float32)
    assert torch.equal(loaded.generate(prompt_embeds=prompt, seed=5, **clip), expected)

    model.save_pretrained(tmp_path / "sharded", max_shard_size="50KB")
    assert len(list((tmp_path / "sharded" / "transformer").glob("*.safetensors"))) > 1
    branches = tmp_path / "branches"
    branches.mkdir()
    for part in ("camera", "ssm"):
        shutil.move(tmp_path / "sharded" / part, branches / part)
    split = WorldStereoModel.from_pretrained(tmp_path / "sharded", branches, dtype=torch.bfloat16)
    backbone = split.transformer.backbone
    assert backbone.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert backbone.scale_shift_table.dtype == torch.float32  # kept in fp32 like diffusers does
    assert split.transformer.camera.trunk.proj_out[0].weight.dtype == torch.bfloat16
    assert next(split.vae.parameters()).dtype == torch.float32
    assert torch.equal(split.transformer.ssm.trunk.proj_out[1].weight.float(),
                       model.transformer.ssm.trunk.proj_out[1].weight.to(torch.bfloat16).float())


def test_missing_weights_say_what_to_configure(tmp_path: Path):
    with pytest.raises(ConfigurationError, match="WORLDSTEREO_MODELS__WAN_I2V"):
        WorldStereoModel.from_pretrained(tmp_path / "absent")
    with pytest.raises(ConfigurationError, match="WORLDSTEREO_MODELS__WAN_I2V"):
        WorldStereoModel.from_settings(Settings(models=ModelPaths()))
    tiny_model().save_pretrained(tmp_path / "wan")
    shutil.rmtree(tmp_path / "wan" / "ssm")
    with pytest.raises(ConfigurationError, match="WORLDSTEREO_MODELS__WORLDSTEREO_BRANCHES"):
        WorldStereoModel.from_settings(Settings(models=ModelPaths(wan_i2v=tmp_path / "wan"), device="cpu"))


class Recorder(nn.Module):
    def __init__(self, name: str, log: list) -> None:
        super().__init__()
        self.name, self.log = name, log

    def to(self, device):  # records moves instead of making them
        self.log.append((self.name, str(torch.device(device))))
        return self


def test_offload_keeps_only_the_component_in_use_on_the_device():
    log: list = []
    transformer, vae = Recorder("transformer", log), Recorder("vae", log)
    placement = Placement("cuda", True, [transformer, vae])
    assert log == [("transformer", "cpu"), ("vae", "cpu")]
    log.clear()
    placement.use(vae)
    placement.use(transformer)
    placement.use(transformer)
    placement.use(vae)
    placement.park()
    assert log == [("vae", "cuda"), ("vae", "cpu"), ("transformer", "cuda"), ("transformer", "cpu"),
                   ("vae", "cuda"), ("vae", "cpu")]
    log.clear()
    resident = Placement("cuda", False, [transformer, vae])
    resident.use(vae)
    resident.park()
    assert log == [("transformer", "cuda"), ("vae", "cuda")]


def test_offloaded_generation_matches_resident_generation():
    model = tiny_model()
    clip, prompt, _ = clip_inputs(model)
    resident = model.generate(prompt_embeds=prompt, **clip)
    offloaded = WorldStereoModel(model.transformer, model.vae, device="cpu", offload=True)
    assert torch.equal(offloaded.generate(prompt_embeds=prompt, **clip), resident)


# --- benchmark --------------------------------------------------------------------------------
def test_ssm_benchmark_reports_measured_and_theoretical_ratios():
    result = run_ssm_benchmark(pairs=4, latent_height=8, latent_width=8, dim=32, num_heads=2, ffn_dim=64,
                               num_layers=1, repeats=1)
    assert result["tokens_per_pair"] == 4 * 8 and result["joint_tokens"] == 4 * 32
    assert result["theoretical_attention_speedup"] == 4.0
    assert 1.0 < result["flop_speedup"] < 4.0
    assert result["speedup"] == pytest.approx(result["joint_s"] / result["per_pair_s"])
    assert "attention 4x" in format_report(result)
