"""Budget allocation and dynamic policies (specdiag.policies) against brute force and simulation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specdiag.policies import allocate, fixed_tau_speedups, heuristic_speedup, heuristic_stationary
from specdiag.speedup import CostModel, speedup_curve

COST = CostModel(floor_ms=20.0, compute_ms=0.02, draft_ms_per_token=1.0)


def _accepted(cond: np.ndarray, tau: int) -> float:
    return float(np.cumprod(cond)[:tau].sum())


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.lists(st.floats(0.05, 0.99), min_size=4, max_size=4)),
        min_size=1,
        max_size=3,
    ),
    st.integers(1, 12),
)
def test_greedy_allocation_is_optimal(classes, budget) -> None:
    """Brute force over every tau of every sequence: the greedy expected accepted tokens is the maximum."""
    cls = [(n, np.array(c)) for n, c in classes]
    _, got, uniform, uniform_acc = allocate(cls, budget, max_tau=4)
    seqs = [c for n, c in cls for _ in range(n)]
    table = [[_accepted(c, t) for t in range(5)] for c in seqs]  # expected accepted of each sequence at tau t
    best = 0.0
    for taus in itertools.product(range(5), repeat=len(seqs)):
        if sum(taus) + len(seqs) <= max(budget, len(seqs)):
            best = max(best, sum(row[t] for row, t in zip(table, taus)))
    assert got == pytest.approx(best, abs=1e-9)
    assert got >= uniform_acc - 1e-9
    if seqs:
        assert uniform * len(seqs) + len(seqs) <= max(budget, len(seqs))


def test_stationary_distribution_edges_and_simulation() -> None:
    cond = np.array([[1.0] * 8, [0.0] * 8, [0.9, 0.85, 0.8, 0.75, 0.7, 0.7, 0.7, 0.7]])
    pi = heuristic_stationary(cond, 8)
    np.testing.assert_allclose(pi.sum(axis=1), 1.0)
    assert pi[0, -1] == pytest.approx(1.0)  # always fully accepted: climbs to max_tau and stays
    assert pi[1, 0] == pytest.approx(1.0)  # never accepted: falls to tau 1 and stays
    # simulate the schedule itself: +2 after a fully accepted step, -1 otherwise
    rng = np.random.default_rng(0)
    tau, visits = 5, np.zeros(8)
    full = np.cumprod(cond[2])
    for _ in range(100_000):
        visits[tau - 1] += 1
        tau = min(tau + 2, 8) if rng.random() < full[tau - 1] else max(tau - 1, 1)
    np.testing.assert_allclose(pi[2], visits / visits.sum(), atol=0.015)


def test_fixed_tau_for_identical_requests_is_the_speedup_curve() -> None:
    cond = np.tile(np.array([0.8] * 16), (5, 1))
    fixed = fixed_tau_speedups(cond, np.ones(5), COST, 8.0, 16)
    expected = [r["speedup"] for r in speedup_curve(0.8, COST, 8.0)]
    np.testing.assert_allclose(fixed, expected)


def test_heuristic_cannot_beat_the_best_fixed_tau_for_one_iid_request() -> None:
    # with one request of constant alpha, every step is alike: a fixed tau is optimal, the schedule a mixture
    cond = np.full((1, 16), 0.75)
    best_fixed = fixed_tau_speedups(cond, np.ones(1), COST, 4.0, 16).max()
    heur, mean_tau = heuristic_speedup(cond, np.ones(1), COST, 4.0, 16)
    assert heur <= best_fixed + 1e-12
    assert 1.0 <= mean_tau <= 16.0


def test_confidence_threshold_pays_for_the_draft_pass_that_stops_it(db) -> None:
    """Every draft token has q = 0.05: at threshold 0.1 each step stops before its first token, having run the draft
    pass that produced it. It verifies one token per step, like the target alone, plus one draft pass: slower than the
    target (the replay counted no draft cost and gave exactly 1.0)."""
    from specdiag.policies import _threshold_speedup, threshold_speedups
    from specdiag.store import connect
    from tests.test_recommend_store import DECAY, Fleet, write_fleet

    cost = CostModel(floor_ms=20.0, compute_ms=0.0, draft_ms_per_token=2.0)
    con = connect(db)
    write_fleet(con, Fleet("q", DECAY, cost, tau=4, requests=30, draft_probs=True), np.random.default_rng(0))
    con.execute("update steps set draft_probs = [0.05, 0.05, 0.05, 0.05] where drafted = 4")
    rows = {round(r["threshold"], 3): r for r in threshold_speedups(con)["q"]}
    con.close()
    assert _threshold_speedup(rows[0.1], cost) == pytest.approx(20.0 / 22.0)
    # threshold 0 never stops: the logged steps, tau draft passes each
    assert rows[0.0]["draft_passes"] == rows[0.0]["drafted"]


def test_budget_classes_each_get_a_sequence_when_the_batch_allows() -> None:
    """Shares of a batch of 4 across three classes (85% of steps in one): the rounding left two classes with no
    sequence, printed as tau 0.00 for them, though its docstring promises each class one sequence when possible."""
    from specdiag.policies import _largest_remainder

    assert _largest_remainder(np.array([0.3, 0.3, 3.4])) == [1, 1, 2]
    assert _largest_remainder(np.array([2.2, 3.3, 4.5])) == [2, 3, 5]  # unchanged when every class has one
    assert _largest_remainder(np.array([0.2, 0.2, 0.6])) == [0, 0, 1]  # a batch of 1: not possible
