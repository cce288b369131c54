"""Request-clustered ratios, change points and BH: the statistics diagnose's findings rest on."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from specdiag import stats


def _sums(a: np.ndarray, d: np.ndarray) -> tuple[float, ...]:
    return (len(a), a.sum(), d.sum(), (a * a).sum(), (a * d).sum(), (d * d).sum())


def _requests(rng: np.random.Generator, n: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Per request: drafted tokens and accepted ones, with per-request acceptance varying around alpha."""
    d = rng.integers(40, 200, n).astype(float)
    p = rng.beta(alpha * 10, (1 - alpha) * 10, n)
    return rng.binomial(d.astype(int), p).astype(float), d


def test_clustered_se_matches_request_bootstrap() -> None:
    rng = np.random.default_rng(0)
    a, d = _requests(rng, 400, 0.7)
    r = stats.ratio_from_sums(*_sums(a, d))
    assert r.value == a.sum() / d.sum()
    lo, hi = stats.bootstrap_ratio_ci(a, d, n_boot=4000, seed=1)
    assert abs((hi - lo) - (r.ci()[1] - r.ci()[0])) < 0.15 * (hi - lo)


def test_clustered_ci_covers_truth_where_a_step_binomial_would_not() -> None:
    """95% CIs cover the true acceptance about 95% of the time; the per-token binomial CI covers far less."""
    rng = np.random.default_rng(2)
    covered = binomial_covered = 0
    for _ in range(400):
        a, d = _requests(rng, 200, 0.7)
        r = stats.ratio_from_sums(*_sums(a, d))
        lo, hi = r.ci()
        covered += lo <= 0.7 <= hi
        se_binom = np.sqrt(r.value * (1 - r.value) / d.sum())
        binomial_covered += abs(r.value - 0.7) <= 1.96 * se_binom
    assert 0.92 <= covered / 400 <= 0.98
    assert binomial_covered / 400 < 0.8


@given(
    st.lists(st.tuples(st.integers(0, 50), st.integers(1, 50)), min_size=2, max_size=40),
)
@settings(max_examples=60, deadline=None)
def test_vectorised_ratio_equals_scalar(pairs: list[tuple[int, int]]) -> None:
    a = np.array([min(x, y) for x, y in pairs], dtype=float)
    d = np.array([y for _, y in pairs], dtype=float)
    r = stats.ratio_from_sums(*_sums(a, d))
    rv, sev = stats.ratio_arrays(*[np.array([x]) for x in _sums(a, d)])
    assert np.isclose(rv[0], r.value) and np.isclose(sev[0], r.se)
    assert 0 <= r.value <= 1 and r.se >= 0


@given(st.floats(0, 10), st.floats(0.01, 0.2))
def test_scan_p_value_is_a_probability_and_above_the_plain_test(z: float, trim: float) -> None:
    p = stats.scan_p_value(z, trim, 1 - trim)
    assert 0 <= p <= 1
    assert p >= 2 * sps.norm.sf(z) - 1e-12


def test_change_point_scan_is_calibrated_without_a_change() -> None:
    """On stationary series the searched split's p-value falls below 0.05 at most about 5% of the time."""
    rng = np.random.default_rng(3)
    hits = 0
    runs = 300
    for _ in range(runs):
        hours = 48
        per_hour = [_requests(rng, 20, 0.7) for _ in range(hours)]
        cols = np.array([_sums(a, d) for a, d in per_hour]).T
        cp = stats.change_point(*cols)
        hits += cp is not None and cp.p_value < 0.05
    assert hits / runs <= 0.07


def test_change_point_finds_the_shift() -> None:
    rng = np.random.default_rng(4)
    per_hour = [_requests(rng, 20, 0.7 if h < 30 else 0.62) for h in range(48)]
    cols = np.array([_sums(a, d) for a, d in per_hour]).T
    cp = stats.change_point(*cols)
    assert cp is not None and abs(cp.index - 30) <= 1 and cp.z < 0 and cp.p_value < 1e-4


def test_change_point_needs_enough_requests_on_each_side() -> None:
    cols = np.array([_sums(np.array([5.0, 6.0]), np.array([10.0, 10.0])) for _ in range(10)]).T
    assert stats.change_point(*cols, min_requests=30) is None


def test_benjamini_hochberg_matches_scipy_and_keeps_nan() -> None:
    p = np.array([0.001, 0.04, np.nan, 0.03, 0.5])
    q = stats.benjamini_hochberg(p)
    assert np.isnan(q[2])
    assert np.allclose(q[[0, 1, 3, 4]], sps.false_discovery_control(p[[0, 1, 3, 4]]))


def test_compare_is_a_two_sided_z_test() -> None:
    before, after = stats.Ratio(0.70, 0.01, 300), stats.Ratio(0.65, 0.01, 300)
    c = stats.compare(before, after)
    assert np.isclose(c.diff, -0.05) and np.isclose(c.z, -0.05 / np.hypot(0.01, 0.01))
    assert np.isclose(c.p_value, 2 * sps.norm.sf(abs(c.z)))
