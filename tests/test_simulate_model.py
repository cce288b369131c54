"""The acceptance sampler and the step drawer, for arbitrary parameters (property tests)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from specdiag.simulate.acceptance import conditional_from_reach, reach_probs, sample_accepted
from specdiag.simulate.generate import draw_steps

probs = st.floats(min_value=0.0, max_value=1.0)


@given(
    probs,
    st.floats(min_value=0.01, max_value=1.0),
    st.floats(min_value=0.0, max_value=2.0),
    st.integers(0, 16),
)
@settings(max_examples=40, deadline=None)
def test_inversion_gives_each_accepted_count_its_probability(
    a1: float, decay: float, h: float, tau: int
) -> None:
    """With u on a fine uniform grid, the share of steps with accepted >= k is P_k = prod_{i<=k} a_i (to 1/m)."""
    reach = reach_probs(np.array([a1]), np.array([decay]), np.array([h]), np.array([tau]))
    m = 20_000
    u = (np.arange(m) + 0.5) / m
    acc = sample_accepted(np.repeat(reach, m, axis=0), u)
    assert acc.min() >= 0 and acc.max() <= tau
    for k in range(tau + 1):
        assert abs((acc >= k).mean() - reach[0, k]) <= 1.0 / m + 1e-12
    cond = conditional_from_reach(reach[0])
    expected = [min(1.0, a1 * decay**i * h) for i in range(tau)]
    reached = reach[0, :tau] > 0
    assert np.allclose(cond[:tau][reached], np.array(expected)[reached])


@given(
    st.lists(st.integers(1, 400), min_size=1, max_size=30),
    st.lists(st.integers(0, 16), min_size=30, max_size=30),
    st.lists(probs, min_size=30, max_size=30),
    st.integers(0, 2**32 - 1),
)
@settings(max_examples=40, deadline=None)
def test_steps_stop_at_the_first_step_reaching_the_output_length(
    targets: list[int], taus: list[int], alphas: list[float], seed: int
) -> None:
    n = len(targets)
    tau = np.array(taus[:n])
    reach = reach_probs(np.array(alphas[:n]), np.full(n, 0.97), np.ones(n), tau)
    target = np.array(targets)
    req, acc = draw_steps(np.random.default_rng(seed), reach, target)
    assert np.all(np.diff(req) >= 0)  # grouped by request, in order
    assert np.all((acc >= 0) & (acc <= tau[req]))
    emitted = np.bincount(req, weights=acc + 1, minlength=n)
    last = np.r_[req[1:] != req[:-1], True]
    before_last = emitted - np.bincount(req[last], weights=acc[last] + 1, minlength=n)
    assert np.all(emitted >= target)  # enough tokens ...
    assert np.all(before_last < target)  # ... and not one step more


def test_arrivals_come_in_time_order_in_bounded_blocks() -> None:
    from specdiag.simulate.scenarios import scenario
    from specdiag.simulate.traffic import arrival_blocks

    fleet = scenario("healthy")
    fleet.days = 0.05  # 7 slices of 10 minutes for 20,000 requests: dense slices must be split
    blocks = list(arrival_blocks(fleet, 20_000, np.random.default_rng(0), 1000))
    t = np.concatenate(blocks)
    assert len(t) == 20_000 and max(len(b) for b in blocks) <= 1000
    assert np.all(np.diff(t) >= 0)
    assert t.min() >= fleet.start.timestamp() and t.max() < fleet.end.timestamp()
