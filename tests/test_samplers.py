"""Samplers on analytic velocity fields, call counts with and without CFG, and the DMD-vs-CFG benchmark."""

from __future__ import annotations

import pytest
import torch

from worldstereo.bench.dmd import format_report, run_dmd_benchmark
from worldstereo.models.samplers import DMDSampler, FlowMatchingSampler, shift_sigmas


class Oracle:
    """Exact velocity of a flow whose data distribution is the single point ``target``: v = (x - x0) / σ."""

    def __init__(self, target: torch.Tensor) -> None:
        self.target = target
        self.timesteps: list[float] = []

    def __call__(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        assert timestep.shape == (x.shape[0],)
        self.timesteps.append(float(timestep[0]))
        return (x - self.target) / (timestep[:, None, None, None, None] / 1000)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def noise() -> torch.Tensor:
    return torch.randn(1, 4, 3, 2, 2, generator=torch.Generator().manual_seed(0))


def test_shift_maps_the_endpoints_and_bends_towards_noise():
    sigmas = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    shifted = shift_sigmas(sigmas, 5.0)
    assert shifted.tolist() == pytest.approx([0.0, 5 * 0.5 / (1 + 4 * 0.5), 1.0])
    assert shift_sigmas(sigmas, 1.0).tolist() == sigmas.tolist()


def test_flow_sigmas_run_from_noise_to_data():
    sigmas = FlowMatchingSampler(steps=40, shift=5.0).sigmas()
    assert sigmas.shape == (41,)
    assert sigmas[0] == 1.0 and sigmas[-1] == 0.0
    assert bool((sigmas[1:] < sigmas[:-1]).all())
    assert float(sigmas[20]) == pytest.approx(5 * 0.5 / (1 + 4 * 0.5))


def test_dmd_schedule_is_1000_750_500_250_shifted_then_zero():
    sigmas = DMDSampler(steps=4, shift=5.0).sigmas()
    raw = torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=torch.float64)
    assert sigmas.tolist() == pytest.approx([*(5 * raw / (1 + 4 * raw)).tolist(), 0.0])
    unshifted = DMDSampler(steps=4, shift=1.0).sigmas()
    assert unshifted.tolist() == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    assert DMDSampler(steps=2, start=500.0, shift=1.0).sigmas().tolist() == pytest.approx([1.0, 0.5, 0.0])


@pytest.mark.parametrize("sampler", [DMDSampler(steps=4), FlowMatchingSampler(steps=7, guidance=1.0)])
def test_euler_recovers_the_data_point_under_the_exact_velocity(sampler, noise):
    target = torch.randn_like(noise)
    oracle = Oracle(target)
    out = sampler.sample(noise, oracle)
    torch.testing.assert_close(out, target, rtol=1e-5, atol=1e-5)
    assert oracle.timesteps == pytest.approx((sampler.sigmas()[:-1] * 1000).tolist(), rel=1e-6)


def test_cfg_extrapolates_from_unconditional_to_conditional_target(noise):
    cond_target, uncond_target = torch.randn_like(noise), torch.randn_like(noise)
    cond, uncond = Oracle(cond_target), Oracle(uncond_target)
    out = FlowMatchingSampler(steps=6, guidance=5.0).sample(noise, cond, uncond)
    # Guided field (x - [x0_u + g (x0_c - x0_u)]) / σ is again a straight flow to the guided point.
    torch.testing.assert_close(out, uncond_target + 5.0 * (cond_target - uncond_target), rtol=1e-4, atol=1e-4)
    assert len(cond.timesteps) == len(uncond.timesteps) == 6


def test_call_counts(noise):
    target = torch.zeros_like(noise)
    dmd, never = Oracle(target), Oracle(target)
    DMDSampler(steps=4).sample(noise, dmd)
    assert len(dmd.timesteps) == 4 and not never.timesteps

    cond, uncond = Oracle(target), Oracle(target)
    FlowMatchingSampler(steps=40, guidance=5.0).sample(noise, cond, uncond)
    assert len(cond.timesteps) + len(uncond.timesteps) == 2 * 40

    plain = Oracle(target)
    FlowMatchingSampler(steps=40, guidance=1.0).sample(noise, plain)
    assert len(plain.timesteps) == 40

    with pytest.raises(ValueError):
        FlowMatchingSampler(steps=3, guidance=5.0).sample(noise, cond)


def test_dmd_benchmark_compares_4_calls_with_80():
    result = run_dmd_benchmark(flow_steps=40, dmd_steps=4, frames=5, height=32, width=32, repeats=1)
    assert result["flow_calls"] == 80 and result["dmd_calls"] == 4
    assert result["theoretical_speedup"] == pytest.approx(20.0)
    assert result["flow_s"] > 0 and result["dmd_s"] > 0
    assert result["speedup"] == pytest.approx(result["flow_s"] / result["dmd_s"])
    report = format_report(result)
    assert "20.0x" in report and "4 calls" in report and "80 calls" in report
