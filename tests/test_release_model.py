"""The released WorldStereo 2.0 architecture: exact state-dict layout, and the numerics a checkpoint relies on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel

from worldstereo.bench.model import run_model_benchmark
from worldstereo.models.codec import decode_keyframes, encode_images
from worldstereo.models.paper.config import tiny_config
from worldstereo.models.release.camera import camera_tokens, matrix_to_quaternion, normalize_cameras, release_plucker
from worldstereo.models.release.config import ControlNetConfig, tiny_controlnet
from worldstereo.models.release.transformer import ControlInputs, ReferenceInputs, ReleaseTransformer
from worldstereo.models.rope import reference_positions
from worldstereo.models.samplers import DMDSampler, UniPCSampler
from worldstereo.models.wan import wan_i2v_14b, wan_i2v_tiny

# State-dict keys and shapes of the released classes for four ControlNet configs (built on the meta device).
MANIFEST = Path(__file__).parent / "data" / "released_2_0_manifest.json"


def _manifest() -> dict:
    return json.loads(MANIFEST.read_text())


@pytest.mark.parametrize("name", ["camera", "memory", "memory_dim2048_l10_mid64", "memory_no_camera_tokens"])
def test_state_dict_matches_release_manifest(name: str) -> None:
    entry = _manifest()[name]
    with torch.device("meta"):
        model = ReleaseTransformer(
            wan_i2v_14b(), ControlNetConfig.from_dict(entry["controlnet_cfg"]), memory=name != "camera"
        )
    ours = {key: list(value.shape) for key, value in model.state_dict().items()}
    expected = entry["state_dict"]
    assert set(ours) == set(expected)
    assert {key: shape for key, shape in ours.items() if shape != expected[key]} == {}


# --- numerics ---------------------------------------------------------------------------------------------------
def _tiny(memory: bool, seed: int = 0) -> ReleaseTransformer:
    torch.manual_seed(seed)
    model = ReleaseTransformer(wan_i2v_tiny(), tiny_controlnet(memory), memory=memory).eval()
    with torch.no_grad():  # random control weights everywhere except the zero read-outs
        for name, parameter in model.named_parameters():
            if name.startswith(("controlnet.controlnet_mask_embedding.mask_zero_proj", "camera_embedding.4")):
                parameter.normal_(std=0.2)
    return model


def _inputs(frames: int = 3, h: int = 4, w: int = 6, batch: int = 1) -> dict:
    generator = torch.Generator().manual_seed(1)
    config = wan_i2v_tiny()
    return {
        "hidden_states": torch.randn(batch, 36, frames, h, w, generator=generator),
        "timestep": torch.full((batch,), 500.0),
        "encoder_hidden_states": torch.randn(batch, 512, config["text_dim"], generator=generator),
        "encoder_hidden_states_image": torch.randn(batch, 5, config["image_dim"], generator=generator),
    }


def _control(inputs: dict) -> ControlInputs:
    batch, _, frames, h, w = inputs["hidden_states"].shape
    generator = torch.Generator().manual_seed(2)
    return ControlInputs(
        torch.randn(batch, 16, frames, h, w, generator=generator),
        torch.randn(batch, 7, frames, 8 * h, 8 * w, generator=generator),
    )


@pytest.mark.parametrize("memory", [False, True])
def test_zero_controlnet_projections_leave_the_backbone_output(memory: bool) -> None:
    model = _tiny(memory)
    backbone = WanTransformer3DModel(**wan_i2v_tiny()).eval()
    missing, unexpected = backbone.load_state_dict(model.state_dict(), strict=False)
    assert missing == [] and all(not key.startswith(("blocks", "patch", "proj_out", "cond")) for key in unexpected)
    inputs = _inputs()
    with torch.no_grad():
        expected = backbone(**inputs, return_dict=False)[0]
        plain = model(**inputs)
        controlled = model(**inputs, control=_control(inputs))
        assert torch.equal(plain, expected)
        assert torch.equal(controlled, expected)
        model.controlnet.proj_out[0].weight.normal_()
        assert not torch.allclose(model(**inputs, control=_control(inputs)), expected)


def test_reference_rope_sits_beside_its_target_frame() -> None:
    model = _tiny(memory=True)
    frames, h, w = 5, 3, 4
    ref_index = torch.tensor([2, 0, 3])
    cos, sin = model.rope.at(reference_positions(ref_index, h, w))
    # the backbone's own RoPE on a grid twice as wide: reference k == right half of latent frame ref_index[k] + 1
    wide_cos, wide_sin = model.rope(torch.zeros(1, 36, frames, 2 * h, 2 * 2 * w))
    wide_cos = wide_cos.reshape(frames, h, 2 * w, -1)
    wide_sin = wide_sin.reshape(frames, h, 2 * w, -1)
    expected_cos = wide_cos[ref_index + 1, :, w:].reshape(-1, wide_cos.shape[-1])
    expected_sin = wide_sin[ref_index + 1, :, w:].reshape(-1, wide_sin.shape[-1])
    assert torch.equal(cos[:, 0], expected_cos) and torch.equal(sin[:, 0], expected_sin)
    assert reference_positions(ref_index, h, w)[0].tolist() == [3, 0, 4]


def test_references_and_camera_tokens_condition_the_targets() -> None:
    model = _tiny(memory=True)
    inputs = _inputs()
    refs = ReferenceInputs(torch.randn(1, 16, 2, 4, 6), torch.tensor([0, 1]), torch.randn(1, 2, 7))
    with torch.no_grad():
        base = model(**inputs)
        with_refs = model(**inputs, references=refs)
        with_cameras = model(**inputs, references=refs, camera_tokens=torch.randn(1, 3, 7))
    assert with_refs.shape == base.shape == (1, 16, 3, 4, 6)
    assert not torch.allclose(with_refs, base) and not torch.allclose(with_cameras, with_refs)


def test_keyframe_encoding_of_n_frames_equals_n_single_encodes() -> None:
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**dict(tiny_config().vae)).eval()
    frames = torch.rand(3, 16, 16, 3)
    with torch.no_grad():
        together = encode_images(vae, frames)
        alone = torch.cat([encode_images(vae, frame[None]) for frame in frames], dim=2)
        decoded = decode_keyframes(vae, together, chunk=2)
        decoded_alone = torch.cat([decode_keyframes(vae, together[:, :, i : i + 1]) for i in range(3)])
    assert together.shape == (1, 16, 3, 2, 2)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    assert decoded.shape == (3, 16, 16, 3)
    torch.testing.assert_close(decoded, decoded_alone, rtol=1e-5, atol=1e-5)


def test_camera_normalisation_and_plucker_rays_hand_case() -> None:
    # world origin 1 ahead of camera 0; camera 1 one unit to the right
    w2c = torch.eye(4).repeat(2, 1, 1)
    w2c[0, 2, 3] = 1.0
    w2c[1, :3, 3] = torch.tensor([-1.0, 0.0, 1.0])
    normalised = normalize_cameras(w2c)
    # relative to camera 0: centres (0,0,0), (1,0,0); both within reach of the (lower) median; mean (0.5,0,0);
    # |c0| = 0.5 -> scale 4
    assert normalised.dtype == torch.float32
    assert torch.allclose(normalised[:, :3, 3], torch.tensor([[2.0, 0, 0], [-2.0, 0, 0]]))
    assert torch.allclose(normalised[:, :3, :3], torch.eye(3).expand(2, 3, 3))
    K = torch.tensor([[2.0, 0, 2], [0, 2, 2], [0, 0, 1]]).expand(2, 3, 3)
    rays = release_plucker(normalised, K, 4, 4)
    assert rays.shape == (2, 6, 4, 4)
    # pixel (row 0, col 0) is sampled at x = -0.5, y = 0.5: K^-1 -> (-1.25, -0.75, 1) / 1.767767
    d = torch.tensor([-1.25, -0.75, 1.0]) / 3.125**0.5
    assert torch.allclose(rays[0, :3, 0, 0], d, atol=1e-6)
    # camera 0 sits at (-2, 0, 0): o x d = (0, 2 d_z, -2 d_y)... = (0, -(-2) d_z, (-2) d_y)
    assert torch.allclose(rays[0, 3:, 0, 0], torch.tensor([0.0, 2 * d[2], -2 * d[1]]), atol=1e-6)
    assert torch.allclose(rays[1, 3:, 0, 0], torch.tensor([0.0, -2 * d[2], 2 * d[1]]), atol=1e-6)


def test_camera_tokens_quaternion_and_translation() -> None:
    quarter = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])  # 90 degrees about z
    q = matrix_to_quaternion(torch.stack([torch.eye(3), quarter, quarter.T]))
    half = 0.5**0.5
    assert torch.allclose(q.float(), torch.tensor([[1.0, 0, 0, 0], [half, 0, 0, half], [half, 0, 0, -half]]))
    w2c = torch.eye(4).repeat(2, 1, 1)
    w2c[0, 2, 3] = 1.0
    w2c[1, :3, 3] = torch.tensor([-1.0, 0.0, 1.0])
    targets, refs = camera_tokens(w2c, w2c[1:])
    assert targets.shape == (2, 7) and refs.shape == (1, 7)
    assert torch.allclose(targets[:, :4], torch.tensor([1.0, 0, 0, 0]).expand(2, 4))
    assert torch.allclose(targets[:, 4:], torch.tensor([[2.0, 0, 0], [-2.0, 0, 0]]))
    assert torch.allclose(refs, targets[1:])


def test_dmd_timesteps_of_the_release_self_test() -> None:
    sampler = DMDSampler(steps=4, shift=5.0, start=250.0, end=1000.0)
    assert torch.allclose(sampler.timesteps(), torch.tensor([1000.0, 937.5, 833.333333, 625.0]))
    seen = []
    result = sampler.sample(torch.ones(1, 2), lambda x, t: seen.append(float(t[0])) or torch.ones_like(x))
    assert seen == pytest.approx([1000.0, 937.5, 833.3333, 625.0], abs=1e-3)
    assert torch.allclose(result, torch.zeros(1, 2))  # dx/dσ = 1 from σ = 1 to 0


def test_unipc_sampler_uses_the_scheduler_config_and_guidance() -> None:
    config = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0).config
    sampler = UniPCSampler(steps=5, guidance=5.0, scheduler_config=config)
    calls = []

    def denoiser(value: float):
        return lambda x, t: calls.append(value) or torch.full_like(x, value)

    out = sampler.sample(torch.zeros(1, 3), denoiser(1.0), denoiser(0.0))
    assert len(calls) == 10 and len(sampler.timesteps()) == 5
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="unconditional"):
        sampler.sample(torch.zeros(1, 3), denoiser(1.0))


def test_bench_model_tiny_runs_one_clip_and_reports_figures():
    result = run_model_benchmark("memory", "tiny", "cpu", frames=3, height=32, width=48, references=2, steps=1)
    assert result["output_shape"] == [3, 32, 48, 3] and result["finite"]
    assert result["transformer_calls"] == 2 and result["sampler"] == "UniPCSampler"  # 1 step with CFG
    assert result["references"] == 2 and result["peak_memory_gb"] > 0
    assert all(result[key] > 0 for key in ("encode_s", "transformer_call_s", "sampling_s", "decode_s"))
