"""Binary segmentation of one segment's hourly series (specdiag.diagnose.changepoint): every change of a series with
several is found at its hour and measured between its neighbours; a series without change is tested once."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specdiag import stats
from specdiag.diagnose.changepoint import (
    CONFIG_WEIGHT,
    SPLIT_P,
    Segment,
    best_split,
    between_neighbours,
    compare_at,
    segment_changes,
)

T0 = datetime(2025, 3, 1)
SEG = Segment("chat-eu", 4, "task", "code")


def hourly(levels: list[tuple[int, float]], per_hour: int, seed: int, tau: int = 4) -> pl.DataFrame:
    """Sufficient statistics per hour of requests whose acceptance_rate is ``level`` for ``hours`` hours, for each
    (hours, level) in turn: per request alpha ~ Beta around the level (prompts differ), 20-60 steps of tau drafts,
    accepted ~ Binomial(drafted, alpha)."""
    rng = np.random.default_rng(seed)
    rows = []
    hour = 0
    for hours, level in levels:
        for _ in range(hours):
            alpha = rng.beta(level * 40, (1 - level) * 40, per_hour)
            d = tau * rng.integers(20, 61, per_hour).astype(float)
            a = rng.binomial(d.astype(int), alpha).astype(float)
            rows.append(
                {
                    "hour": T0 + timedelta(hours=hour),
                    "n": per_hour,
                    "accepted": a.sum(),
                    "drafted": d.sum(),
                    "aa": (a * a).sum(),
                    "ad": (a * d).sum(),
                    "dd": (d * d).sum(),
                }
            )
            hour += 1
    return pl.DataFrame(rows)


def changes(rows: pl.DataFrame) -> list:
    return between_neighbours(sorted(segment_changes(SEG, rows, []), key=lambda t: t.split))


def test_three_changes_are_found_at_their_hours_and_measured_between_neighbours() -> None:
    rows = hourly([(30, 0.60), (30, 0.50), (30, 0.58), (30, 0.45)], per_hour=20, seed=1)
    found = [t for t in changes(rows) if t.p_value <= stats.FDR_Q]
    assert [t.split for t in found] == [T0 + timedelta(hours=h) for h in (30, 60, 90)]
    for t, move in zip(found, (-0.10, +0.08, -0.13)):
        assert abs(t.acceptance.diff - move) < 0.03
        # the before side starts at the previous change, the after side ends before the next
        assert t.frame.height == 60


def test_a_series_without_change_is_tested_once() -> None:
    quiet = 0
    for seed in range(20):
        found = changes(hourly([(96, 0.55)], per_hour=10, seed=seed))
        quiet += len(found) == 1
    # the first split is significant (and its sides searched again) with probability SPLIT_P = 0.05 at most
    assert quiet >= 17


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.tuples(st.integers(4, 40), st.floats(0.3, 0.8)), min_size=1, max_size=4),
    st.integers(3, 30),
    st.integers(0, 2**16),
)
def test_every_change_is_inside_its_interval_with_enough_requests(
    levels: list[tuple[int, float]], per_hour: int, seed: int
) -> None:
    rows = hourly(levels, per_hour, seed)
    found = changes(rows)
    splits = [t.split for t in found]
    assert splits == sorted(set(splits))  # distinct changes, in time order
    for t in found:
        assert t.frame["hour"].min() < t.split <= t.frame["hour"].max()
        assert min(t.acceptance.before.n, t.acceptance.after.n) >= stats.MIN_REQUESTS
        assert 0.0 <= t.p_value <= 1.0
    cuts = [t for t in found if t.p_value <= SPLIT_P]
    for a, b in zip(cuts, cuts[1:]):
        assert a.frame["hour"].max() < b.split  # a change's after side ends before the next change


def test_a_drop_at_a_configuration_change_is_tested_there_with_most_of_the_level() -> None:
    """A rollout at hour 40: the split is the rollout's, and its p-value the weighted Bonferroni combination of the
    plain z test there (0.8 of the level) and the scan over every hour (0.2)."""
    rows = hourly([(40, 0.60), (40, 0.55)], per_hour=12, seed=3)
    rollout = T0 + timedelta(hours=40)
    t = best_split(SEG, rows, rows, [(rollout, rollout)])
    assert t is not None and t.split == rollout
    plain = compare_at(rows, "acceptance_rate", rollout)
    cols = ("n", "accepted", "drafted", "aa", "ad", "dd")
    scan = stats.change_point(*(rows[c].to_numpy().astype(float) for c in cols))
    assert scan is not None
    expected = min(1.0, plain.p_value / CONFIG_WEIGHT, scan.p_value / (1 - CONFIG_WEIGHT))
    assert t.p_value == pytest.approx(expected)
    # testing where the configuration changed is worth more than the search: the plain test alone is far stronger
    assert plain.p_value / CONFIG_WEIGHT < scan.p_value / (1 - CONFIG_WEIGHT)
