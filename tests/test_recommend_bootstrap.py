"""The request bootstrap refits the costs per replicate: wider intervals than with costs fixed, near-nominal coverage.

Synthetic deployments generated here with numpy: i.i.d. acceptance alpha, a known cost model, and verify times with
a per-request random effect (steps of one request share their slowness), so the cost fit carries real uncertainty.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from specdiag.acceptance import counts_by_unit
from specdiag.costs import COST_SUMS, fit_from_unit_sums
from specdiag.recommend import (
    CostUnits,
    DeploymentUnits,
    GroupCost,
    GroupUnits,
    bootstrap_deployment,
    recommend_from_store,
    resample_weights,
)
from specdiag.speedup import CostModel, speedup
from specdiag.store import connect
from tests.test_recommend_store import COST, DECAY, Fleet, write_fleet

ALPHA = 0.8
TRUTH = CostModel(floor_ms=20.0, compute_ms=0.05, draft_ms_per_token=1.5)
TAU = 4
MAX_TAU = 8
KEY = ("syn",)


def synthetic(rng: np.random.Generator, requests: int = 60, steps: int = 30, request_sd: float = 0.25):
    """A deployment's units as the store path builds them, and the true mean batch size of its steps (16.5)."""
    control = np.arange(requests) % 5 == 0  # every fifth request runs tau = 0
    tau = np.where(control, 0, TAU)
    batch = rng.integers(1, 33, requests).astype(float)  # B ~ U{1..32}, E[B] = 16.5
    unit = np.repeat(np.arange(requests), steps)
    d = np.repeat(tau, steps)
    b = np.repeat(batch, steps)
    ok = (rng.random((unit.size, TAU)) < ALPHA) & (np.arange(TAU)[None, :] < d[:, None])
    a = np.cumprod(ok, axis=1).sum(axis=1)
    slow = np.repeat(rng.normal(0.0, request_sd, requests), steps)  # per-request random effect, mean 0
    x = (d + 1) * b
    y = TRUTH.target_ms(d + 1, b) * (1.0 + slow + 0.05 * rng.standard_normal(unit.size))
    draft = d * TRUTH.draft_ms_per_token * (1.0 + 0.05 * rng.standard_normal(unit.size))
    spec = d > 0

    def per_request(v: np.ndarray) -> np.ndarray:
        return np.bincount(unit, weights=v, minlength=requests)

    sums = np.column_stack(
        [
            per_request(np.ones(unit.size)),
            per_request(x),
            per_request(x * x),
            per_request(x * y),
            per_request(y),
            per_request(y * y),
            per_request(draft * spec),
            per_request(d * spec),
            per_request(spec.astype(float)),
            per_request(b * spec),
        ]
    )
    assert sums.shape[1] == len(COST_SUMS)
    sp = np.flatnonzero(~control)
    at_risk, accepted = counts_by_unit(unit, d, a, np.ones(unit.size), requests, MAX_TAU)
    units = DeploymentUnits(
        n_units=requests,
        groups={KEY: GroupUnits(sp, at_risk[sp], accepted[sp])},
        costs=CostUnits(np.arange(requests), sums),
    )
    return units


def interval(units: DeploymentUnits, refit: bool, n_boot: int, seed: int) -> tuple[float, float, float]:
    """(point speedup at TAU, 2.5% and 97.5% bootstrap percentiles)."""
    assert units.costs is not None
    fit = fit_from_unit_sums(units.costs.sums)
    assert fit is not None
    group = units.groups[KEY]
    rate = group.accepted.sum(axis=0)[:TAU] / group.at_risk.sum(axis=0)[:TAU]
    point = speedup(rate, TAU, fit.model, fit.batch_mean)
    cost = {KEY: GroupCost(fit.model, fit.batch_mean)}
    boots = bootstrap_deployment(units, [KEY], cost, refit, MAX_TAU, n_boot, np.random.default_rng(seed))[KEY]
    lo, hi = np.nanpercentile(boots[:, TAU], [2.5, 97.5])
    return point, float(lo), float(hi)


def test_resample_weights_are_multinomial_counts() -> None:
    w = resample_weights(np.random.default_rng(0), 50, 400)
    assert w.shape == (400, 50)
    assert (w.sum(axis=1) == 50).all()  # every replicate draws as many units as there are
    assert np.all(w == np.round(w)) and w.min() >= 0
    # multinomial(50, 1/50): each count has mean 1 and variance 1 - 1/50
    assert w.mean() == pytest.approx(1.0)
    assert w.var() == pytest.approx(1 - 1 / 50, rel=0.1)


def test_refitting_costs_widens_the_interval() -> None:
    units = synthetic(np.random.default_rng(1))
    point, lo_fixed, hi_fixed = interval(units, refit=False, n_boot=100, seed=2)
    _, lo, hi = interval(units, refit=True, n_boot=100, seed=2)
    assert lo <= point <= hi
    # per-request slowness makes the verify cost uncertain: the interval that refits it is clearly wider
    assert hi - lo > 1.5 * (hi_fixed - lo_fixed)


def test_interval_with_refit_costs_covers_the_true_speedup_near_nominally() -> None:
    """40 synthetic deployments x 40 replicates (each a few matrix products over 60 requests, < 1 s in all)."""
    truth = speedup(ALPHA, TAU, TRUTH, 16.5)
    covered = {True: 0, False: 0}
    draws = 40
    for i in range(draws):
        units = synthetic(np.random.default_rng(100 + i))
        for refit in (True, False):
            _, lo, hi = interval(units, refit, n_boot=40, seed=i)
            covered[refit] += lo <= truth <= hi
    # nominal 95%: 38 of 40 expected; 33 is 3.5 binomial standard errors below. Holding the costs fixed ignores
    # most of the uncertainty here and covers far less often.
    assert covered[True] >= 33, covered
    assert covered[False] <= covered[True] - 10, covered


def test_store_intervals_say_what_they_cover(db: Path) -> None:
    con = connect(db)
    write_fleet(con, Fleet("fit", DECAY, COST, tau=4, requests=120), np.random.default_rng(3))
    write_fleet(
        con,
        Fleet("prof", DECAY, COST, tau=4, requests=120, draft_model="draft-p"),
        np.random.default_rng(4),
    )
    con.execute("update requests set target_model = 'target-p' where deployment = 'prof'")
    for batch in (1, 8):
        for n in (1, 3, 5):
            con.execute(
                "insert into cost_profiles values ('p1', ?, 'target-p', 'draft-p', 'cpu', 'float32', ?, ?, ?, ?)",
                [datetime(2026, 1, 2), batch, n, float(COST.target_ms(n, batch)), COST.draft_ms_per_token],
            )
    recs = {r["deployment"]: r for r in recommend_from_store(con, n_boot=40)}
    con.close()
    assert recs["fit"]["costs"]["source"] == "fitted"
    assert recs["fit"]["ci_covers"] == "acceptance and costs"
    assert recs["prof"]["costs"]["source"] == "profile"
    assert recs["prof"]["ci_covers"] == "acceptance"
    assert any("measured (replay profile) costs fixed" in n for n in recs["prof"]["notes"])
    for rec in recs.values():
        lo, hi = rec["ci"]
        assert lo <= rec["expected_speedup"] <= hi


def test_each_draft_segment_refits_its_own_draft_cost(db: Path) -> None:
    rng = np.random.default_rng(5)
    con = connect(db)
    write_fleet(con, Fleet("pair", DECAY, COST, tau=4, requests=150, draft_model="small"), rng)
    big = CostModel(COST.floor_ms, COST.compute_ms, draft_ms_per_token=12.0)
    write_fleet(con, Fleet("pair", DECAY, big, tau=4, requests=150, draft_model="big"), rng)
    recs = {r["segment"]["draft_model"]: r for r in recommend_from_store(con, by=["draft_model"], n_boot=40)}
    con.close()
    # same acceptance, one draft 8x dearer: the intervals must not overlap (each replicate uses its own draft cost)
    assert recs["big"]["ci_covers"] == "acceptance and costs"
    assert recs["big"]["curve"][4]["ci"][1] < recs["small"]["curve"][4]["ci"][0]
