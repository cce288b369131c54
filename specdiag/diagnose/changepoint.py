"""Before/after comparisons of every segment: at a detected change point, or between two chosen windows.

A segment is a deployment (dimension ``deployment``, value ``*``) or a deployment restricted to one value of one
dimension (``task = code``). Its hourly series of sufficient statistics comes from queries/diagnose_segments.sql.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from specdiag import stats
from specdiag.stats import Comparison, Ratio

# The sufficient statistics of each ratio diagnose compares, as (n, a, d, aa, ad, dd) column names.
METRICS: dict[str, tuple[str, str, str, str, str, str]] = {
    "acceptance_rate": ("n", "accepted", "drafted", "aa", "ad", "dd"),
    "quality": ("q_n", "q_sum", "q_n", "q_sq", "q_sum", "q_n"),  # mean: d_i = 1, so D = S_dd = n, S_ad = A
    "shadow_match_rate": ("s_n", "s_sum", "s_n", "s_sum", "s_sum", "s_n"),  # 0/1 values: S_aa = A
    "ms_per_token": ("t_n", "ms", "tok", "mm", "tm", "tt"),
}


@dataclass(frozen=True)
class Segment:
    deployment: str
    dimension: str
    value: str

    @property
    def fields(self) -> dict[str, str]:
        return {} if self.dimension == "deployment" else {self.dimension: self.value}


@dataclass
class SegmentTest:
    """One segment's acceptance before vs after ``split`` (the first hour of the after side)."""

    segment: Segment
    split: datetime
    acceptance: Comparison
    p_value: float  # scan-corrected when the split was searched for, else the plain two-sided z test
    hours: np.ndarray  # the series' hour stamps
    frame: pl.DataFrame  # the series' rows, one per hour
    q_value: float = float("nan")  # Benjamini-Hochberg adjusted across every tested segment

    def compare(self, metric: str, split: datetime | None = None) -> Comparison:
        return compare_at(self.frame, metric, split or self.split)


def series(frame: pl.DataFrame) -> Iterator[tuple[Segment, pl.DataFrame]]:
    """Each segment's hourly rows, sorted by hour."""
    for key, rows in frame.sort("hour").group_by(["deployment", "dimension", "value"], maintain_order=True):
        yield Segment(str(key[0]), str(key[1]), str(key[2])), rows


def sums(rows: pl.DataFrame, metric: str) -> Ratio:
    cols = METRICS[metric]
    vals = [float(rows[c].fill_null(0).sum()) for c in cols]
    return stats.ratio_from_sums(*vals)


def compare_at(rows: pl.DataFrame, metric: str, split: datetime) -> Comparison:
    before = rows.filter(pl.col("hour") < split)
    after = rows.filter(pl.col("hour") >= split)
    return stats.compare(sums(before, metric), sums(after, metric))


def compare_windows(
    rows: pl.DataFrame, metric: str, baseline: tuple[datetime, datetime], window: tuple[datetime, datetime]
) -> Comparison:
    """Hours with start <= hour < end on each side (windows are compared at hour granularity)."""
    before = rows.filter((pl.col("hour") >= baseline[0]) & (pl.col("hour") < baseline[1]))
    after = rows.filter((pl.col("hour") >= window[0]) & (pl.col("hour") < window[1]))
    return stats.compare(sums(before, metric), sums(after, metric))


def _arrays(rows: pl.DataFrame, metric: str) -> tuple[np.ndarray, ...]:
    return tuple(rows[c].fill_null(0).to_numpy().astype(float) for c in METRICS[metric])


def detect(frame: pl.DataFrame, metric: str = "acceptance_rate") -> list[SegmentTest]:
    """Every segment's most likely change point in ``metric`` and its scan-corrected p-value."""
    tests = []
    for seg, rows in series(frame):
        n, a, d, aa, ad, dd = _arrays(rows, metric)
        cp = stats.change_point(n, a, d, aa, ad, dd)
        if cp is None:
            continue
        hours = rows["hour"].to_numpy()
        split = rows["hour"][cp.index]
        comparison = compare_at(rows, metric, split)
        tests.append(SegmentTest(seg, split, comparison, cp.p_value, hours, rows))
    return tests


def windows(
    frame: pl.DataFrame,
    baseline: tuple[datetime, datetime],
    window: tuple[datetime, datetime],
    metric: str = "acceptance_rate",
) -> list[SegmentTest]:
    """Every segment's baseline-vs-window comparison (no search, so the plain z test's p-value)."""
    tests = []
    for seg, rows in series(frame):
        comparison = compare_windows(rows, metric, baseline, window)
        if min(comparison.before.n, comparison.after.n) < stats.MIN_REQUESTS or not np.isfinite(comparison.z):
            continue
        kept = rows.filter(
            ((pl.col("hour") >= baseline[0]) & (pl.col("hour") < baseline[1]))
            | ((pl.col("hour") >= window[0]) & (pl.col("hour") < window[1]))
        )
        tests.append(
            SegmentTest(seg, window[0], comparison, comparison.p_value, kept["hour"].to_numpy(), kept)
        )
    return tests


def adjust(tests: list[SegmentTest]) -> None:
    """Benjamini-Hochberg across every tested segment, in place."""
    q = stats.benjamini_hochberg([t.p_value for t in tests])
    for t, qv in zip(tests, q):
        t.q_value = float(qv)
