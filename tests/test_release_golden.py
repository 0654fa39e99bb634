"""The released model's numerics against outputs of the official code (``tests/data/release_2_0_tiny.pt``).

The file holds tiny official weights, inputs and outputs computed by the official classes on a CPU in float32
(its ``README`` entry describes every key). The denoisers replayed bit-identically on the machine that wrote it;
another CPU or thread count rounds float32 matmuls differently, so outputs are compared within 1e-5 of their
largest value (observed on a 2-core machine: 1.4e-6 absolute, 6e-7 relative).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from worldstereo.models.loading import keeps_fp32
from worldstereo.models.release.camera import camera_tokens, normalize_cameras, release_plucker
from worldstereo.models.release.config import ControlNetConfig
from worldstereo.models.release.transformer import ControlInputs, ReferenceInputs, ReleaseTransformer, autocast
from worldstereo.models.samplers import DMDSampler, UniPCSampler

GOLDEN = Path(__file__).parent / "data" / "release_2_0_tiny.pt"
CAMERA_ATOL = 1e-6


@pytest.fixture(scope="module")
def golden() -> dict:
    return torch.load(GOLDEN, weights_only=True)


def _model(entry: dict, memory: bool) -> ReleaseTransformer:
    backbone = dict(entry["backbone_kwargs"], patch_size=tuple(entry["backbone_kwargs"]["patch_size"]))
    model = ReleaseTransformer(backbone, ControlNetConfig.from_dict(entry["controlnet_cfg"]), memory=memory)
    model.load_state_dict(entry["state_dict"], strict=True)
    return model.eval()


def _forward(model: ReleaseTransformer, inputs: dict) -> torch.Tensor:
    """The official forward's keyword inputs in this model's terms."""
    control = ControlInputs(inputs["render_latent"], torch.cat([inputs["render_mask"], inputs["camera_embedding"]], 1))
    references, tokens = None, inputs.get("camera_qt")
    if "reference_latent" in inputs:
        layout = inputs["reference_latent"]  # [z; ones; z]
        z = layout[:, :16]
        assert torch.equal(layout[:, 20:], z) and bool((layout[:, 16:20] == 1).all())
        references = ReferenceInputs(z, inputs["ref_index"], inputs["camera_qt_ref"])
    with torch.no_grad():
        return model(inputs["hidden_states"], inputs["timestep"], inputs["encoder_hidden_states"],
                     inputs["encoder_hidden_states_image"], control, references, tokens)


def _tolerance(output: torch.Tensor) -> float:
    return 1e-5 * float(output.abs().max())


@pytest.mark.parametrize("variant", ["camera", "memory"])
def test_denoiser_equals_the_official_one_for_base_and_every_perturbation(golden: dict, variant: str) -> None:
    entry = golden["denoiser"][variant]
    model = _model(entry, memory=variant == "memory")
    assert sum(p.numel() for p in model.parameters()) == entry["param_count"]
    cases = {"base": (entry["inputs"], entry["output"])}
    for name, perturbation in entry["perturbations"].items():
        assert set(perturbation["inputs"]) == set(perturbation["changed_keys"])
        cases[name] = (entry["inputs"] | perturbation["inputs"], perturbation["output"])
    assert len(cases) == 5
    for name, (inputs, expected) in cases.items():
        output = _forward(model, inputs)
        assert output.dtype == torch.float32 and output.shape == expected.shape
        error = float((output - expected).abs().max())
        assert error <= _tolerance(expected), f"{variant}/{name}: max |ours - official| {error:.3e}"
    base = cases["base"][1]
    assert all(not torch.equal(expected, base) for name, (_, expected) in cases.items() if name != "base")


@pytest.mark.parametrize("trajectory", ["dining_spaces_030", "kitchen_traj_left", "random_21"])
def test_camera_normalisation_plucker_rays_and_tokens(golden: dict, trajectory: str) -> None:
    case = golden["camera"][trajectory]
    w2c, K, w2c_ref = case["w2c"], case["K"], case["w2c_ref"]
    frames = len(w2c)

    def close(ours: torch.Tensor, official: torch.Tensor) -> None:
        assert ours.dtype == official.dtype and ours.shape == official.shape
        assert float((ours - official).abs().max()) <= CAMERA_ATOL

    normalised = normalize_cameras(w2c)
    close(normalised, case["normalized_w2c"])
    rays = release_plucker(normalised, K, case["H"], case["W"])  # [F, 6, H, W]
    close(rays.transpose(0, 1)[None], case["plucker"])
    unified = normalize_cameras(torch.cat([w2c, w2c_ref]), count=frames)
    close(unified, torch.cat([case["unified_w2c"], case["unified_w2c_ref"]]))
    targets, refs = camera_tokens(w2c, w2c_ref)
    close(targets, case["camera_qt"])
    close(refs, case["camera_qt_ref"])


def test_unipc_grid_is_the_official_pin_exactly(golden: dict) -> None:
    samplers = golden["samplers"]
    assert samplers["unipc_diffusers"] == "0.36.0"
    for grid in samplers["unipc"].values():
        config = dict(samplers["unipc_scheduler_config"], flow_shift=grid["flow_shift"])
        sampler = UniPCSampler(steps=grid["steps"], scheduler_config=config)
        timesteps, sigmas = sampler.timesteps(), sampler.sigmas()
        assert timesteps.dtype == torch.int64 and torch.equal(timesteps, grid["timesteps"])
        assert sigmas.dtype == torch.float32 and torch.equal(sigmas, grid["sigmas"])


def test_unipc_sampler_steps_through_the_official_grid(golden: dict) -> None:
    samplers = golden["samplers"]
    grid = samplers["unipc"]["flow_shift_3.0"]
    sampler = UniPCSampler(steps=40, guidance=1.0, scheduler_config=dict(samplers["unipc_scheduler_config"]))
    seen = []
    sampler.sample(torch.zeros(1, 2), lambda x, t: seen.append(int(t[0])) or torch.ones_like(x))
    assert seen == grid["timesteps"].tolist()


def test_dmd_timesteps_equal_the_official_scheduler(golden: dict) -> None:
    for schedule in golden["samplers"]["dmd"].values():
        sampler = DMDSampler(steps=schedule["dmd_steps"], shift=schedule["gen_shift"],
                             start=schedule["dmd_start_steps"], end=schedule["dmd_end_steps"])
        assert torch.equal(sampler.timesteps(), schedule["timesteps"])
        assert torch.equal(sampler.sigmas(), schedule["sigmas"])


def test_half_precision_keeps_controlnet_and_camera_mlp_float32_under_autocast(golden: dict) -> None:
    """The release's precision on a CPU: bf16 backbone, float32 ControlNet and camera MLP, autocast to bf16."""
    entry = golden["denoiser"]["memory"]
    model = _model(entry, memory=True)
    for name, parameter in model.named_parameters():
        parameter.data = parameter.data.float() if keeps_fp32(ReleaseTransformer, name) else parameter.data.bfloat16()
    kept = {name.split(".")[0] for name, p in model.named_parameters() if p.dtype == torch.float32}
    assert {"controlnet", "camera_embedding", "ref_index_embedding"} <= kept
    assert model.dtype == torch.bfloat16 and model.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    seen = {}

    def record(name: str, module: torch.nn.Module) -> None:
        module.register_forward_hook(lambda _, args, out: seen.setdefault(name, (args[0].dtype, out.dtype)) and None)

    block = model.controlnet.controlnet_blocks[0]
    record("norm_q", block.self_attn.norm_q)
    record("ffn", block.ffn[0])
    record("camera", model.camera_embedding[4])
    half = {key: value.bfloat16() if value.is_floating_point() and key != "camera_embedding" else value
            for key, value in entry["inputs"].items()}
    with autocast(torch.device("cpu"), torch.bfloat16):
        output = _forward(model, half)
    # matmuls in bf16; the q/k RMSNorm (diffusers': float32 variance and weight) answers float32
    assert seen["norm_q"] == (torch.bfloat16, torch.float32)
    assert seen["ffn"][1] == seen["camera"][1] == torch.bfloat16
    cosine = torch.nn.functional.cosine_similarity(output.float().flatten(), entry["output"].flatten(), dim=0)
    print(f"bf16 memory denoiser against the float32 official output: cosine {float(cosine):.5f}")
    assert float(cosine) > 0.95  # bf16 rounding through random unit-scale weights (observed 0.973)
    with autocast(torch.device("cpu"), torch.float32):
        assert not torch.is_autocast_enabled("cpu")
