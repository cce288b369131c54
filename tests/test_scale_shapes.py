"""Wide stores: work per segment or group must not grow with the number of configuration values, sparse strata or
groups (a cost multiplied by another dimension of the store made diagnose and recommend run for minutes or hours)."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import numpy as np
import polars as pl
import pytest

from specdiag import stats
from specdiag.acceptance import counts_by_unit
from specdiag.diagnose import changepoint
from specdiag.diagnose.changepoint import Segment, best_split
from specdiag.recommend import _acceptance_units

T0 = datetime(2025, 3, 1)
SEG = Segment("chat-eu", 4, "deployment", "*")


def _rows(hours: int, strata: int, per_hour: int, drop_at: int, seed: int = 0) -> pl.DataFrame:
    """Per (hour, stratum) sums; acceptance falls from 0.7 to 0.5 at hour ``drop_at``. Stratum s of ``strata`` gets
    requests only every ``strata`` hours (thousands of sparse tasks), stratum 'big' every hour."""
    rng = np.random.default_rng(seed)
    out = []
    for h in range(hours):
        level = 0.7 if h < drop_at else 0.5
        for stratum, n in (("big", per_hour), (f"t{h % strata}", 2)):
            d = 4.0 * rng.integers(20, 41, n)
            a = rng.binomial(d.astype(int), level).astype(float)
            out.append(
                {"hour": T0 + timedelta(hours=h), "stratum": stratum, "n": n, "accepted": a.sum(),
                 "drafted": d.sum(), "aa": (a * a).sum(), "ad": (a * d).sum(), "dd": (d * d).sum()}
            )  # fmt: skip
    return pl.DataFrame(out)


def _old_choice(rows: pl.DataFrame, inside: list) -> int | None:
    """The configuration change best_split picked before: compare_at at every candidate, smallest finite p."""
    cands = []
    for i, (before_end, split) in enumerate(inside):
        c = changepoint.compare_at(rows, "acceptance_rate", split, before_end)
        if min(c.before.n, c.after.n) >= stats.MIN_REQUESTS and np.isfinite(c.p_value):
            cands.append((c.p_value, i))
    return min(cands)[1] if cands else None


def test_config_candidates_are_scored_at_once_and_pick_what_the_loop_picked(monkeypatch) -> None:
    rows = _rows(hours=200, strata=7, per_hour=20, drop_at=120)
    # a new temperature value (0.7000001, 0.7000002, ...) every hour: 198 candidate configuration changes
    inside = [(T0 + timedelta(hours=h), T0 + timedelta(hours=h + 1)) for h in range(1, 199)]
    expected = _old_choice(rows, inside)
    calls = []
    real = changepoint.compare_at
    monkeypatch.setattr(changepoint, "compare_at", lambda *a, **k: calls.append(1) or real(*a, **k))
    t = best_split(SEG, rows, rows, inside)
    assert len(calls) <= 2  # the scan's split and the winning configuration change, not one per candidate
    assert expected is not None and t is not None
    before_end, split = inside[expected]
    assert (t.before_end, t.split) == (before_end, split)
    c = real(rows, "acceptance_rate", split, before_end)  # equal up to polars' group order (last digit)
    assert (t.acceptance.before.n, t.acceptance.after.n) == (c.before.n, c.after.n)
    assert t.acceptance.diff == pytest.approx(c.diff, rel=1e-12)


def test_sparse_strata_are_merged_and_the_scan_is_unchanged() -> None:
    rows = _rows(hours=300, strata=150, per_hour=15, drop_at=200)  # 150 strata of 2-4 requests each
    hours = rows["hour"].unique().sort().to_numpy()
    arrays, pooled_only = changepoint._arrays(rows, "acceptance_rate", hours)
    assert pooled_only and arrays[0].shape == (2, 300)  # 'big' and one pooled-only row, not (151, 300)
    # the dense per-stratum arrays, as before
    names, s_idx = np.unique(rows["stratum"].to_numpy(), return_inverse=True)
    h_idx = np.searchsorted(hours, rows["hour"].to_numpy())
    dense = []
    for c in ("n", "accepted", "drafted", "aa", "ad", "dd"):
        x = np.zeros((len(names), len(hours)))
        np.add.at(x, (s_idx, h_idx), rows[c].to_numpy().astype(float))
        dense.append(x)
    assert stats.change_point(*arrays, pooled_only=True) == stats.change_point(*dense)

    def sides(x: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:  # (6, S, 1) sums before / from hour 150
        x3 = np.stack(x)
        return x3[:, :, :150].sum(axis=2, keepdims=True), x3[:, :, 150:].sum(axis=2, keepdims=True)

    (b, a), (mb, ma) = sides(dense), sides(list(arrays))
    for x, y in zip(stats.stratified(b, a), stats.stratified(mb, ma, pooled_only=True), strict=True):
        np.testing.assert_array_equal(x, y)


def test_acceptance_units_per_group_match_a_mask_per_group() -> None:
    """Each group's units and counts come from one sort by group; the same as selecting the group's rows by mask."""
    con = duckdb.connect()
    rng = np.random.default_rng(1)
    n = 3000
    con.execute(
        "create table requests as select i as rid, 'dep-' || (i % 7) as deployment, 'task-' || (i * 13 % 29) as task "
        "from range(?) t(i)",
        [n],
    )
    hist = pl.DataFrame(
        {"unit_key": rng.integers(0, n, 20000), "drafted": rng.integers(0, 5, 20000)}
    ).with_columns(
        pl.min_horizontal("drafted", pl.Series(rng.integers(0, 5, 20000))).alias("accepted"),
        pl.lit(1).alias("steps"),
    )
    con.register("h", hist.to_arrow())
    con.execute(
        "create table recommend_histogram as select h.*, r.deployment from h join requests r on r.rid = h.unit_key"
    )
    # _acceptance_units joins requests on rowid: rowid = rid here (rows inserted in order)
    out = _acceptance_units(con, ("task",), 4)
    assert len(out) == 7 * 29
    rows = con.execute(
        "select h.unit_key, h.drafted, h.accepted, h.steps, h.deployment, r.task from recommend_histogram h "
        "join requests r on r.rowid = h.unit_key where h.drafted > 0"
    ).fetchnumpy()
    for (dep, task), (keys, at_risk, acc) in out.items():
        mask = (rows["deployment"] == dep) & (rows["task"] == task)
        units = np.unique(rows["unit_key"][mask])
        np.testing.assert_array_equal(keys, units)
        e_risk, e_acc = counts_by_unit(
            np.searchsorted(units, rows["unit_key"][mask]), rows["drafted"][mask], rows["accepted"][mask],
            rows["steps"][mask].astype(float), units.size, 4,
        )  # fmt: skip
        np.testing.assert_array_equal(at_risk, e_risk)
        np.testing.assert_array_equal(acc, e_acc)
