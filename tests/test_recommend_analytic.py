"""Analytic mode against Leviathan et al. 2023 (arXiv 2211.17192): Eq. (1), Thm 3.8 and Cor. 3.9.

Where the expected numbers come from: the paper's text was not reachable from this offline environment, so every
expected value below is the closed form evaluated by hand (arithmetic in the comments), not our code's output:
the c = 0 speed is Eq. (1), E = (1 - alpha^(gamma+1)) / (1 - alpha); with c > 0 Thm 3.8 divides it by (gamma c + 1).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specdiag.recommend import analytic


@pytest.mark.parametrize(
    "alpha,gamma,speed",
    [
        # c = 0: the walltime improvement is the expected tokens per step (Eq. 1)
        (0.75, 7, 3.5995483398),  # (1 - 0.75^8) / 0.25 = (1 - 0.100112915) / 0.25
        (0.8, 5, 3.68928),  # (1 - 0.8^6) / 0.2 = (1 - 0.262144) / 0.2
        (0.6, 3, 2.176),  # 1 + 0.6 + 0.36 + 0.216
        (0.5, 1, 1.5),
        (0.9, 10, 6.8618940391),  # (1 - 0.9^11) / 0.1 = (1 - 0.313810596) / 0.1
    ],
)
def test_c_zero_speed_is_eq1(alpha: float, gamma: int, speed: float) -> None:
    result = analytic(alpha, 0.0, tau=gamma)
    assert result["expected_speedup"] == pytest.approx(speed, rel=1e-9)
    assert result["expected_tokens_per_step"] == pytest.approx(speed, rel=1e-9)
    # with free drafting every extra draft token helps a little: the best tau is the largest allowed
    assert result["recommended_tau"] == 16


@pytest.mark.parametrize(
    "alpha,c,best,speed",
    [
        # Thm 3.8 over gamma = 0..16, by hand; neighbours shown to make the optimum checkable
        (0.8, 0.05, 8, 3.0921),  # gamma 7, 8, 9: see test_optimal_gamma_alpha_08_c_005_by_hand
        (
            0.6,
            0.1,
            3,
            1.6738,
        ),  # gamma 2: 1.96/1.2 = 1.6333; gamma 3: 2.176/1.3 = 1.6738; gamma 4: 2.3056/1.4 = 1.6469
        (
            0.8,
            0.1,
            6,
            2.4696,
        ),  # gamma 5: 3.6893/1.5 = 2.4595; gamma 6: 3.9514/1.6 = 2.4696; gamma 7: 4.1611/1.7 = 2.4477
        (0.5, 0.3, 1, 1.1538),  # gamma 1: 1.5/1.3 = 1.1538; gamma 2: 1.75/1.6 = 1.0938
    ],
)
def test_optimal_gamma_follows_thm_3_8(alpha: float, c: float, best: int, speed: float) -> None:
    result = analytic(alpha, c)
    assert result["recommended_tau"] == best
    assert result["expected_speedup"] == pytest.approx(speed, abs=5e-5)


def test_optimal_gamma_alpha_08_c_005_by_hand() -> None:
    # E(gamma) for alpha 0.8: 1 + 0.8 + ... + 0.8^gamma. E(7) = 4.16114, E(8) = 4.32891, E(9) = 4.46313
    # speed = E / (1 + 0.05 gamma): 7 -> 3.08233, 8 -> 3.09208, 9 -> 3.07802: the optimum is gamma 8
    curve = analytic(0.8, 0.05)["curve"]
    assert [round(curve[g]["speedup"], 5) for g in (7, 8, 9)] == [3.08233, 3.09208, 3.07802]


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 0.99), st.floats(0.0, 1.0))
def test_cor_3_9_speculation_helps_iff_alpha_exceeds_c(alpha: float, c: float) -> None:
    result = analytic(alpha, c)
    if alpha > c + 1e-9:
        # Cor. 3.9: gamma = 1 already gives (1 + alpha) / (1 + c) > 1
        assert result["recommended_tau"] >= 1
        assert result["expected_speedup"] >= (1 + alpha) / (1 + c) - 1e-12
    elif alpha < c - 1e-9:
        # sum_{i<=gamma} alpha^i < gamma c for every gamma >= 1: no tau beats the target alone
        assert result["recommended_tau"] == 0
        assert result["expected_speedup"] == 1.0
    curve = result["curve"]
    assert max(r["speedup"] for r in curve) == pytest.approx(result["expected_speedup"])


def test_cli_json_is_exactly_the_documented_shape(run) -> None:
    res = run("recommend", "--alpha", "0.8", "--cost", "0.05", "--max-tau", "10", "--json")
    assert res.exit_code == 0, res.stderr
    payload = json.loads(res.stdout)
    assert set(payload) == {"recommended_tau", "expected_speedup", "expected_tokens_per_step", "curve"}
    assert payload["recommended_tau"] == 8
    assert [set(r) for r in payload["curve"]] == [{"tau", "expected_tokens_per_step", "speedup"}] * 11
    tau3 = json.loads(run("recommend", "--alpha", "0.8", "--cost", "0.05", "--tau", "3", "--json").stdout)
    assert tau3["recommended_tau"] == 8
    assert tau3["expected_tokens_per_step"] == pytest.approx(2.952)  # 1 + 0.8 + 0.64 + 0.512
    assert tau3["expected_speedup"] == pytest.approx(2.952 / 1.15)


def test_cli_table_and_bad_values(run) -> None:
    res = run("recommend", "--alpha", "0.6", "--cost", "0.1")
    assert res.exit_code == 0
    assert "recommended tau 3" in res.stdout
    for args, text in [
        (("--alpha", "1.5", "--cost", "0.1"), "--alpha 1.5"),
        (("--alpha", "0.5"), "--alpha needs --cost"),
        (("--alpha", "0.5", "--cost", "-1"), "--cost -1"),
    ]:
        bad = run("recommend", *args)
        assert bad.exit_code == 2, args
        assert text in bad.stderr and "Traceback" not in bad.stderr


def test_python_dash_m_specdiag_cli_runs_the_cli() -> None:
    """`python -m specdiag.cli ...` runs the command like `python -m specdiag` (it used to exit 0 doing nothing)."""
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "specdiag.cli", "recommend", "--alpha", "0.8", "--cost", "0.05", "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert res.returncode == 0 and '"recommended_tau": 8' in res.stdout
