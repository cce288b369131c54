"""The shared speedup model against Leviathan et al. 2023 (arXiv 2211.17192)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from specdiag.speedup import (
    CostModel,
    alpha_from_mal,
    best_tau,
    expected_tokens,
    expected_tokens_iid,
    speedup,
    speedup_curve,
    speedup_iid,
)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.6, 0.8, 0.95])
@pytest.mark.parametrize("tau", [0, 1, 3, 7])
def test_iid_matches_per_position_with_constant_alpha(alpha: float, tau: int) -> None:
    assert expected_tokens([alpha] * tau, tau) == pytest.approx(expected_tokens_iid(alpha, tau))


def test_expected_tokens_edge_cases() -> None:
    assert expected_tokens_iid(1.0, 4) == 5.0
    assert expected_tokens_iid(0.0, 4) == 1.0
    # by hand: 1 + 0.8 + 0.8*0.5 = 2.2
    assert expected_tokens([0.8, 0.5], 2) == pytest.approx(2.2)


@pytest.mark.parametrize("alpha,tau", [(0.2, 1), (0.6, 3), (0.9, 5), (0.75, 16)])
def test_alpha_from_mal_inverts_eq1(alpha: float, tau: int) -> None:
    assert alpha_from_mal(expected_tokens_iid(alpha, tau), tau) == pytest.approx(alpha, abs=1e-9)


def test_alpha_from_mal_clips_and_handles_tau0() -> None:
    assert alpha_from_mal(0.9, 3) == 0.0
    assert alpha_from_mal(5.0, 3) == 1.0
    assert math.isnan(alpha_from_mal(2.0, 0))


def test_cost_model_reduces_to_thm_3_8_when_verify_is_free() -> None:
    cost = CostModel(floor_ms=20.0, compute_ms=0.0, draft_ms_per_token=1.0)  # c = 0.05
    for tau in range(0, 9):
        assert speedup(0.7, tau, cost) == pytest.approx(speedup_iid(0.7, tau, 0.05))


def test_costly_verification_lowers_best_tau_at_large_batch() -> None:
    cost = CostModel(floor_ms=20.0, compute_ms=0.02, draft_ms_per_token=1.0)
    small = best_tau(speedup_curve(0.8, cost, batch_size=1))
    large = best_tau(speedup_curve(0.8, cost, batch_size=256))
    assert large < small
    assert speedup(0.8, 0, cost, 256) == 1.0


@given(
    st.lists(st.floats(0.0, 1.0), min_size=16, max_size=16),
    st.floats(0.1, 50.0),
    st.floats(0.0, 1.0),
    st.floats(0.0, 5.0),
    st.floats(1.0, 256.0),
)
def test_the_curve_at_once_equals_each_tau_alone(
    cond: list[float], floor_ms: float, compute_ms: float, draft_ms: float, batch: float
) -> None:
    """speedup_curve computes every tau from one running product; it must agree with speedup and expected_tokens."""
    cost = CostModel(floor_ms, compute_ms, draft_ms)
    for row in speedup_curve(cond, cost, batch, 16):
        tau = row["tau"]
        assert row["expected_tokens_per_step"] == pytest.approx(expected_tokens(cond, tau), rel=1e-12)
        assert row["speedup"] == pytest.approx(speedup(cond, tau, cost, batch), rel=1e-12)
