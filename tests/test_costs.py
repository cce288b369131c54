"""The cost fit recovers a known CostModel from timed steps; replay's profiles are preferred when stored."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specdiag.costs import fit_cost_model, fit_costs, fit_from_sums, fitted_costs
from specdiag.recommend import recommend_from_store
from specdiag.speedup import CostModel
from specdiag.store import connect
from tests.test_recommend_store import DECAY, Fleet, write_fleet

TRUTH = CostModel(floor_ms=18.0, compute_ms=0.04, draft_ms_per_token=1.5)


def test_fit_recovers_a_known_cost_model_with_control_traffic(db: Path) -> None:
    con = connect(db)
    rng = np.random.default_rng(0)
    write_fleet(
        con, Fleet("fit", DECAY, TRUTH, tau=4, requests=150, batch_sizes=(1, 8, 32, 64)), rng, noise=0.05
    )
    fit = fit_costs(con, "fit")
    con.close()
    assert fit is not None and fit.source == "fitted" and fit.identified
    assert fit.model.floor_ms == pytest.approx(TRUTH.floor_ms, rel=0.03)
    assert fit.model.compute_ms == pytest.approx(TRUTH.compute_ms, rel=0.05)
    assert fit.model.draft_ms_per_token == pytest.approx(TRUTH.draft_ms_per_token, rel=0.02)
    assert fit.r2 is not None and fit.r2 > 0.9


def test_control_traffic_alone_separates_floor_from_compute_at_one_batch_size(db: Path) -> None:
    # one batch size, one tau: only tau = 0 control steps (n = 1) give a second point on the line
    con = connect(db)
    write_fleet(con, Fleet("ctl", DECAY, TRUTH, tau=6, requests=200, batch_sizes=(16,), control_share=0.3),
                np.random.default_rng(1), noise=0.02)  # fmt: skip
    model = fit_cost_model(con, "ctl")
    con.close()
    assert model is not None
    assert model.floor_ms == pytest.approx(TRUTH.floor_ms, rel=0.05)
    assert model.compute_ms == pytest.approx(TRUTH.compute_ms, rel=0.1)


def test_a_single_operating_point_is_flagged_not_identified(db: Path) -> None:
    con = connect(db)
    write_fleet(
        con,
        Fleet("one", DECAY, TRUTH, tau=4, requests=50, control_share=0.0),
        np.random.default_rng(2),
        noise=0.0,
    )
    fit = fit_costs(con, "one")
    con.close()
    assert fit is not None and not fit.identified
    # flat cost through the single point: t(5, 4) as measured
    assert fit.model.compute_ms == 0.0
    assert fit.model.floor_ms == pytest.approx(float(TRUTH.target_ms(5, 4)))


def test_replay_profile_is_preferred_for_the_deployments_model_pair(db: Path) -> None:
    con = connect(db)
    write_fleet(con, Fleet("prof", DECAY, TRUTH, tau=4, requests=50), np.random.default_rng(3))
    profile = CostModel(floor_ms=30.0, compute_ms=0.01, draft_ms_per_token=0.9)
    for batch in (1, 8):
        for n in (1, 3, 5):
            con.execute(
                "insert into cost_profiles values ('p1', ?, 'target-l', 'draft-s', 'cpu', 'float32', ?, ?, ?, ?)",
                [
                    datetime(2026, 1, 2),
                    batch,
                    n,
                    float(profile.target_ms(n, batch)),
                    profile.draft_ms_per_token,
                ],
            )
    fit = fit_costs(con, "prof")
    con.close()
    assert fit is not None and fit.source == "profile"
    assert fit.model.floor_ms == pytest.approx(profile.floor_ms)
    assert fit.model.compute_ms == pytest.approx(profile.compute_ms)
    assert fit.model.draft_ms_per_token == pytest.approx(profile.draft_ms_per_token)


def test_no_timings_no_model(db: Path) -> None:
    con = connect(db)
    write_fleet(con, Fleet("none", DECAY, TRUTH, tau=4, requests=20), np.random.default_rng(4))
    con.execute("update steps set draft_ms = null")
    assert fit_cost_model(con, "none") is None
    assert fit_cost_model(con, "unknown") is None
    con.close()


def test_recommend_fits_from_per_request_sums_what_the_sql_fit_gives(db: Path) -> None:
    """recommend fits the costs in numpy from its one pass over the steps; explain uses recommend_costs.sql."""
    con = connect(db)
    rng = np.random.default_rng(6)
    write_fleet(con, Fleet("a", DECAY, TRUTH, tau=4, requests=80, batch_sizes=(1, 8, 32)), rng, noise=0.05)
    write_fleet(con, Fleet("b", DECAY, TRUTH, tau=3, requests=40, control_share=0.0), rng, noise=0.05)
    con.execute(
        "update steps set batch_size = null where step % 3 = 0"
    )  # falls back to the request's batch size
    con.execute("update steps set draft_ms = null where step % 7 = 0")  # untimed drafts leave the draft cost
    sql = fitted_costs(con)
    recs = {r["deployment"]: r["costs"] for r in recommend_from_store(con, n_boot=0)}
    con.close()
    assert set(recs) == set(sql) == {"a", "b"}
    assert not sql["b"].identified and sql["a"].identified
    for dep, fit in sql.items():
        for key, value in fit.to_dict().items():
            if isinstance(value, float):
                assert recs[dep][key] == pytest.approx(value, rel=1e-9), (dep, key)
            else:
                assert recs[dep][key] == value, (dep, key)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 8), st.integers(1, 64), st.floats(1.0, 200.0), st.integers(0, 3)),
        min_size=2,
        max_size=30,
    ),
)
def test_weighted_sums_give_the_least_squares_fit_of_the_repeated_steps(rows) -> None:
    """A bootstrap replicate's fit (weights @ per-request sums) is ordinary least squares on its resampled steps."""
    drafted, batch, verify, weight = (np.array(c, dtype=float) for c in zip(*rows))
    x = (drafted + 1) * batch
    per_step = np.column_stack(
        [np.ones_like(x), x, x * x, x * verify, verify, verify**2, drafted * 1.1, drafted,
         (drafted > 0).astype(float), batch * (drafted > 0)]
    )  # fmt: skip
    fit = fit_from_sums(weight @ per_step)
    keep = np.repeat(np.arange(x.size), weight.astype(int))
    xs, ys = x[keep], verify[keep]
    if keep.size == 0:
        assert np.isnan(fit.floor_ms[0])
        return
    assert fit.n_steps[0] == keep.size
    flat = np.ptp(xs) == 0
    if not flat:
        slope, intercept = np.polyfit(xs, ys, 1)
        assert fit.identified[0]
        if min(slope, intercept) > 1e-6:
            assert fit.compute_ms[0] == pytest.approx(slope, rel=1e-6)
            assert fit.floor_ms[0] == pytest.approx(intercept, rel=1e-6)
            return
        flat = (
            min(slope, intercept) < -1e-6
        )  # a slope or floor that is not physical (on the boundary: either)
    else:
        assert not fit.identified[0]
    if flat:  # one operating point, or a negative slope or floor: a flat verify cost at the mean
        assert fit.compute_ms[0] == 0.0
        assert fit.floor_ms[0] == pytest.approx(ys.mean(), rel=1e-9)
