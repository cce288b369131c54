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


def _heavy_requests(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Heavy-tailed output lengths (log-normal, sigma 1.2: a few long requests carry most drafted tokens) and a wide
    spread of per-request acceptance: 30 such requests hold about 7 effective ones (Kish, D^2 / S_dd)."""
    d = 4.0 * np.ceil(rng.lognormal(np.log(40), 1.2, n))
    return rng.binomial(d.astype(int), rng.beta(3, 3, n)).astype(float), d


def test_compare_of_heavy_tailed_requests_keeps_its_level() -> None:
    """30 against 300 requests of the same traffic: the plain z rejected at p < 0.0027 (|z| > 3) 2% of the time,
    7 times nominal; Student's t on the sides' effective requests brings it near nominal."""
    rng = np.random.default_rng(8)
    runs = 2000
    hits = 0
    for _ in range(runs):
        a, d = _heavy_requests(rng, 30)
        assert d.sum() ** 2 / (d * d).sum() < 30
        before = stats.ratio_from_sums(*_sums(a, d))
        after = stats.ratio_from_sums(*_sums(*_heavy_requests(rng, 300)))
        hits += stats.compare(before, after).p_value < 0.0027
    assert hits / runs < 0.01


def test_change_point_scan_of_heavy_tailed_requests_keeps_its_level() -> None:
    """Short stationary series (16 hours of 10 requests) of heavy-tailed requests: the scan's p < 0.01 came 2.3% of
    the time with the plain z (its splits near the ends rest on a few long requests), about 0.5% with Student's t."""
    rng = np.random.default_rng(7)
    runs = 1000
    hits = 0
    for _ in range(runs):
        cols = np.array([_sums(*_heavy_requests(rng, 10)) for _ in range(16)]).T
        cp = stats.change_point(*cols)
        hits += cp is not None and cp.p_value < 0.01
    assert hits / runs <= 0.012


def test_an_overwhelming_change_keeps_a_finite_z() -> None:
    """Millions of requests and a large drop: Student's t tail underflows; z stays finite (a change point scan and the
    window comparison skip non-finite splits), with p = 0."""
    c = stats.compare(stats.Ratio(0.7, 0.001, 3000, 2000.0), stats.Ratio(0.6, 0.001, 3000, 2000.0))
    assert np.isfinite(c.z) and c.z < -30 and c.p_value == 0.0
    rng = np.random.default_rng(4)
    per_hour = [_requests(rng, 2000, 0.7 if h < 30 else 0.5) for h in range(48)]
    cp = stats.change_point(*np.array([_sums(a, d) for a, d in per_hour]).T)
    assert cp is not None and cp.index == 30 and cp.p_value < 1e-12
