"""``worldstereo eval`` on the synthetic ground-truth suite: the oracle is near-perfect, the warp baseline lower."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from worldstereo.cli import app

QUICK = ["--suite", "synthetic", "--frames", "5", "--scale", "0.25"]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, dict]:
    out = {}
    for generator in ("oracle", "warp"):
        path = tmp_path_factory.mktemp(generator) / "eval.json"
        env = {"WORLDSTEREO_SPLAT__ENABLED": "false"}  # the splats' scores: tests/test_splat.py
        run = CliRunner().invoke(app, ["eval", *QUICK, "--generator", generator, "--json", str(path)], env=env)
        assert run.exit_code == 0, run.output
        print(f"\n{generator}\n{run.stdout}")
        out[generator] = json.loads(path.read_text())
    return out


def test_oracle_gives_near_perfect_scores(results):
    oracle = results["oracle"]
    assert [row["scene"] for row in oracle["scenes"]] == ["room", "object", "panorama"]
    assert oracle["f1"] >= 0.95 and all(row["f1"] >= 0.95 for row in oracle["scenes"])
    assert oracle["rot_err"] == pytest.approx(0.0, abs=1e-6)
    assert oracle["trans_err"] == pytest.approx(0.0, abs=1e-6)
    assert oracle["ate"] == pytest.approx(0.0, abs=1e-6)
    # memory-bank frames are kept in 8 bits: exact frames score the rounding floor 10 log10(12 * 255^2) = 58.9 dB
    # (SSIM 0.9995)
    assert oracle["psnr"] >= 58.5 and oracle["ssim"] == pytest.approx(1.0, abs=1e-3)


def test_warp_baseline_is_reported_lower(results):
    warp, oracle = results["warp"], results["oracle"]
    assert set(warp) >= {"f1", "auc", "rot_err", "trans_err", "ate", "psnr", "ssim", "scenes"}
    assert warp["f1"] < oracle["f1"]
    assert warp["psnr"] < oracle["psnr"]
