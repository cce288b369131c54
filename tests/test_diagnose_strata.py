"""Acceptance compared within strata (task x temperature bucket): a change of traffic mix is not a change of
acceptance, the spread between strata leaves the standard error, and the test keeps its level."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from specdiag import stats
from specdiag.diagnose import data
from specdiag.diagnose.changepoint import detect
from specdiag.store import connect
from tests.test_diagnose import T0, fleet, run_diagnose


def _sums(a: np.ndarray, d: np.ndarray) -> np.ndarray:
    return np.array([len(a), a.sum(), d.sum(), (a * a).sum(), (a * d).sum(), (d * d).sum()], dtype=float)


def _requests(rng: np.random.Generator, n: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Per request: drafted tokens and accepted ones, per-request acceptance ~ Beta around alpha (prompts differ)."""
    d = rng.integers(40, 200, n).astype(float)
    p = rng.beta(alpha * 20, (1 - alpha) * 20, n)
    return rng.binomial(d.astype(int), p).astype(float), d


def _side(rng: np.random.Generator, sizes: list[int], alphas: list[float]) -> np.ndarray:
    """(6, S) stratum sums of one side: sizes[s] requests at acceptance alphas[s]."""
    return np.stack([_sums(*_requests(rng, n, a)) for n, a in zip(sizes, alphas)], axis=1)


def test_one_stratum_is_the_plain_comparison() -> None:
    rng = np.random.default_rng(0)
    b, a = _side(rng, [300], [0.6]), _side(rng, [250], [0.55])
    strat = stats.compare_stratified(b, a)
    plain = stats.compare(stats.ratio_from_sums(*b[:, 0]), stats.ratio_from_sums(*a[:, 0]))
    assert np.isclose(strat.diff, plain.diff) and np.isclose(strat.se, plain.se)
    assert np.isclose(strat.p_value, plain.p_value)


def test_a_shift_of_traffic_mix_is_not_a_change_within_strata() -> None:
    """Temperature 0 accepts 0.65, temperature 0.7 accepts 0.50; the high-temperature share goes from 20% to 80%."""
    rng = np.random.default_rng(1)
    alphas = [0.65, 0.50]
    b, a = _side(rng, [800, 200], alphas), _side(rng, [200, 800], alphas)
    pooled = stats.compare(stats.ratio_from_sums(*b.sum(axis=1)), stats.ratio_from_sums(*a.sum(axis=1)))
    strat = stats.compare_stratified(b, a)
    assert pooled.diff < -0.07 and pooled.p_value < 1e-6  # read as a drop without strata
    assert abs(strat.diff) < 0.02 and strat.p_value > 0.01


def test_stratified_test_keeps_its_level_and_is_tighter_than_pooled() -> None:
    """Without change, the stratified z test rejects about 5% at 0.05; strata that differ leave its SE."""
    rng = np.random.default_rng(2)
    rejected, ratio = 0, []
    for _ in range(400):
        sizes = list(rng.multinomial(300, [0.5, 0.5]))
        b = _side(rng, sizes, [0.70, 0.50])
        a = _side(rng, list(rng.multinomial(300, [0.5, 0.5])), [0.70, 0.50])
        strat = stats.compare_stratified(b, a)
        pooled = stats.compare(stats.ratio_from_sums(*b.sum(axis=1)), stats.ratio_from_sums(*a.sum(axis=1)))
        rejected += strat.p_value <= 0.05
        ratio.append(strat.se / pooled.se)
    assert 0.025 <= rejected / 400 <= 0.08
    assert np.mean(ratio) < 0.9


def test_strata_on_one_side_only_fall_back_to_the_pooled_comparison() -> None:
    """A temperature change that moves all traffic to another bucket leaves no stratum on both sides."""
    rng = np.random.default_rng(3)
    b = np.concatenate([_side(rng, [300], [0.65]), np.zeros((6, 1))], axis=1)
    a = np.concatenate([np.zeros((6, 1)), _side(rng, [300], [0.50])], axis=1)
    strat = stats.compare_stratified(b, a)
    plain = stats.compare(stats.ratio_from_sums(*b[:, 0]), stats.ratio_from_sums(*a[:, 1]))
    assert np.isclose(strat.diff, plain.diff) and strat.diff < -0.1


@given(
    st.lists(
        st.tuples(st.integers(0, 60), st.integers(0, 60), st.floats(0.05, 0.95), st.floats(0.05, 0.95)),
        min_size=1,
        max_size=6,
    ),
    st.integers(0, 2**16),
)
@settings(max_examples=60, deadline=None)
def test_standardised_rates_are_averages_of_the_strata(
    strata: list[tuple[int, int, float, float]], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    b = _side(rng, [s[0] for s in strata], [s[2] for s in strata])
    a = _side(rng, [s[1] for s in strata], [s[3] for s in strata])
    rb, sb, nb, ra, sa, na, _ = (float(x[0]) for x in stats.stratified(b[:, :, None], a[:, :, None]))
    for value, side in ((rb, b), (ra, a)):
        if not np.isfinite(value):
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            rates = side[1] / side[2]
        rates = rates[np.isfinite(rates)]
        assert rates.min() - 1e-9 <= value <= rates.max() + 1e-9
    assert not sb < 0 and not sa < 0
    assert nb <= b[0].sum() and na <= a[0].sum()


def test_change_point_with_one_stratum_is_the_pooled_scan() -> None:
    rng = np.random.default_rng(4)
    hours = [_sums(*_requests(rng, 12, 0.6 if h < 30 else 0.5)) for h in range(60)]
    x = np.stack(hours, axis=1)  # (6, K)
    one = stats.change_point(*x)
    two = stats.change_point(*x[:, None, :])
    assert one is not None and two is not None
    assert (one.index, one.z, one.p_value) == (two.index, two.z, two.p_value)
    assert one.index == 30


def test_mix_shift_in_a_deployment_is_not_a_regression(db: Path) -> None:
    """chat-eu's code task accepts 0.25 less than its other tasks all along; from hour 24 three quarters of the other
    tasks' traffic goes elsewhere, so chat-eu's pooled acceptance_rate falls although no task's did."""
    fleet(db, drop={"deployment": "chat-eu", "task": "code", "hour": 0, "delta": 0.25}, seed=5)
    con = connect(db)
    con.execute(
        "delete from requests where deployment = 'chat-eu' and task <> 'code' and ts >= $at "
        "and hash(request_id) % 4 <> 0",
        {"at": T0 + timedelta(hours=24)},
    )
    pooled = con.execute(
        "select sum(accepted) filter (where ts < $at) / sum(drafted) filter (where ts < $at) "
        "- sum(accepted) filter (where ts >= $at) / sum(drafted) filter (where ts >= $at) "
        "from requests where deployment = 'chat-eu' and tau > 0",
        {"at": T0 + timedelta(hours=24)},
    ).fetchone()[0]
    con.close()
    assert pooled > 0.05  # what a pooled before/after comparison reports as a drop
    found = [f for f in run_diagnose(db) if f.kind == "acceptance_regression"]
    assert found == [], [f.summary for f in found]


def test_a_child_that_is_its_whole_deployment_is_not_tested(db: Path) -> None:
    """One target_model per deployment: its series is the deployment's, so it is not a second test in BH's family."""
    fleet(db, seed=6)
    con = connect(db)
    tests = detect(data.segments(con), data.config(con))
    con.close()
    dims = {t.segment.dimension for t in tests}
    assert "target_model" not in dims and "draft_model" not in dims
    assert {"deployment", "task", "temperature_bucket"} <= dims
