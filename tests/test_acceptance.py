"""The censored per-position acceptance estimator recovers known acceptance from steps logged at a smaller tau."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specdiag.acceptance import (
    MIN_AT_RISK,
    conditional_acceptance,
    counts_by_unit,
    counts_from_steps,
    counts_from_windows,
    hazard_matrix,
)
from specdiag.speedup import expected_tokens

TRUE = np.array([0.9, 0.8, 0.75, 0.7, 0.65, 0.6, 0.6, 0.55])


def draw_steps(rng: np.random.Generator, cond: np.ndarray, drafted: np.ndarray) -> np.ndarray:
    """Accepted prefix length of each step: position i accepted with cond[i-1] given 1..i-1 accepted."""
    ok = rng.random((drafted.size, cond.size)) < cond[None, :]
    ok &= np.arange(cond.size)[None, :] < drafted[:, None]
    return np.cumprod(ok, axis=1).sum(axis=1)


def test_recovers_positions_from_steps_logged_at_mixed_tau() -> None:
    rng = np.random.default_rng(0)
    drafted = rng.choice([2, 4, 8], size=60_000)
    accepted = draw_steps(rng, TRUE, drafted)
    at_risk, acc = counts_from_steps(drafted, accepted, 8)
    est = conditional_acceptance(at_risk, acc, max_tau=8)
    assert est.n_estimated == 8
    # within 4 binomial standard errors at every position (position 8 has ~1,750 steps at risk)
    se = np.sqrt(TRUE * (1 - TRUE) / at_risk)
    assert (np.abs(est.cond_alpha - TRUE) < 4 * se).all()


def test_censoring_matters_the_naive_rate_is_biased() -> None:
    # logged at tau = 3: a step with accepted = drafted says nothing about position 4
    rng = np.random.default_rng(1)
    drafted = np.full(40_000, 3)
    accepted = draw_steps(rng, TRUE, drafted)
    est = conditional_acceptance(*counts_from_steps(drafted, accepted, 3), max_tau=3)
    np.testing.assert_allclose(est.cond_alpha, TRUE[:3], atol=0.01)
    naive = accepted.sum() / drafted.sum()  # acceptance_rate: the per-token alpha engines print
    assert abs(naive - TRUE[:3].mean()) > 0.05
    # and the expected tokens per step match what the steps actually produced
    assert expected_tokens(est.cond_alpha, 3) == pytest.approx(1 + accepted.mean(), rel=0.01)


def test_geometric_tail_beyond_the_logged_tau() -> None:
    rng = np.random.default_rng(2)
    drafted = np.full(50_000, 4)
    accepted = draw_steps(rng, TRUE, drafted)
    at_risk, acc = counts_from_steps(drafted, accepted, 16)
    est = conditional_acceptance(at_risk, acc, max_tau=16, tail_positions=3)
    assert est.n_estimated == 4
    # tail = pooled ratio over the last three estimated positions (2, 3, 4), used for every later position
    pooled = acc[1:4].sum() / at_risk[1:4].sum()
    assert est.tail_alpha == pytest.approx(pooled)
    np.testing.assert_allclose(est.cond_alpha[4:], pooled)
    assert pooled == pytest.approx(np.average(TRUE[1:4], weights=at_risk[1:4]), abs=0.01)


def test_sparse_positions_fall_back_to_the_tail() -> None:
    # 1000 steps at tau 2 and 10 steps at tau 6: positions 3..6 have fewer than MIN_AT_RISK steps
    rng = np.random.default_rng(3)
    drafted = np.r_[np.full(1000, 2), np.full(10, 6)]
    accepted = draw_steps(rng, TRUE, drafted)
    at_risk, acc = counts_from_steps(drafted, accepted, 8)
    assert at_risk[2] < MIN_AT_RISK
    est = conditional_acceptance(at_risk, acc, max_tau=8)
    assert est.n_estimated == 2
    np.testing.assert_allclose(est.cond_alpha[2:], est.tail_alpha)


def test_windows_give_the_same_counts_as_their_steps() -> None:
    rng = np.random.default_rng(4)
    drafted = np.full(5000, 5)
    accepted = draw_steps(rng, TRUE, drafted)
    # engine counter: steps whose accepted count reached i (= accepted tokens at position i)
    per_position = [(accepted >= i).sum() for i in range(1, 6)]
    w_at_risk, w_acc = counts_from_windows(drafted.size, per_position, tau=5, max_pos=8)
    s_at_risk, s_acc = counts_from_steps(drafted, accepted, 8)
    np.testing.assert_array_equal(w_at_risk, s_at_risk)
    np.testing.assert_array_equal(w_acc, s_acc)


def test_no_data_is_nan_and_bad_counts_are_rejected() -> None:
    est = conditional_acceptance(np.zeros(4), np.zeros(4), max_tau=4)
    assert np.isnan(est.alpha) and np.isnan(est.cond_alpha).all()
    with pytest.raises(ValueError):
        conditional_acceptance([10, 5], [11, 2])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 8), st.integers(0, 8)), min_size=1, max_size=200),
    st.integers(1, 16),
)
def test_estimates_are_probabilities_and_at_risk_only_shrinks_at_fixed_tau(pairs, max_tau) -> None:
    drafted = np.array([d for d, _ in pairs])
    accepted = np.minimum(np.array([a for _, a in pairs]), drafted)
    at_risk, acc = counts_from_steps(drafted, accepted, 8)
    assert (acc <= at_risk).all()
    est = conditional_acceptance(at_risk, acc, max_tau=max_tau, min_at_risk=1)
    assert est.cond_alpha.shape == (max_tau,)
    assert ((est.cond_alpha >= 0) & (est.cond_alpha <= 1)).all()
    fixed = np.full(drafted.size, 8)
    r, _ = counts_from_steps(fixed, accepted, 8)
    assert (np.diff(r) <= 0).all()


def test_vectorised_rows_match_one_at_a_time() -> None:
    rng = np.random.default_rng(5)
    rows = []
    for _ in range(5):
        drafted = rng.choice([1, 3, 6], size=rng.integers(20, 400))
        rows.append(counts_from_steps(drafted, draw_steps(rng, TRUE, drafted), 8))
    at_risk = np.stack([r for r, _ in rows])
    acc = np.stack([a for _, a in rows])
    cond, _, _ = hazard_matrix(at_risk, acc, 12)
    for i, (r, a) in enumerate(rows):
        np.testing.assert_allclose(cond[i], conditional_acceptance(r, a, 12).cond_alpha)


def test_histogram_counts_per_unit_match_counts_from_steps() -> None:
    rng = np.random.default_rng(6)
    unit = rng.integers(0, 5, size=3000)
    drafted = rng.choice([1, 4, 7], size=3000)
    accepted = draw_steps(rng, TRUE, drafted)
    # collapse to (unit, drafted, accepted) -> steps, as recommend_histogram.sql does
    keys, steps = np.unique(np.stack([unit, drafted, accepted]), axis=1, return_counts=True)
    at_risk, acc = counts_by_unit(keys[0], keys[1], keys[2], steps, 5, 8)
    for u in range(5):
        r, a = counts_from_steps(drafted[unit == u], accepted[unit == u], 8)
        np.testing.assert_array_equal(at_risk[u], r)
        np.testing.assert_array_equal(acc[u], a)
