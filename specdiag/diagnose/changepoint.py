"""Before/after comparisons of every segment: at its change points, or between two chosen windows.

A segment is a deployment (dimension ``deployment``, value ``*``) or a deployment restricted to one value of one
dimension (``task = code``). Its hourly series of sufficient statistics comes from queries/diagnose_segments.sql, one
row per hour and stratum (task x temperature bucket); acceptance_rate is compared within strata
(``stats.stratified``), the other metrics on the hour's totals. A frame without a ``stratum`` column is one stratum.

A series may hold several changes (two incidents a day apart, a rise then a drop). They are found by binary
segmentation: the most likely change of the whole series is tested; when it is significant (p <= SPLIT_P), each side
of it is searched again the same way, down to MAX_DEPTH levels. At every level the candidate split comes from two
places, and its p-value is their weighted Bonferroni combination, p = min(1, p_scan / (1 - W), k p_config / W)
with W = CONFIG_WEIGHT:
- the scan: the split of largest |z| over every hour of the interval (``stats.change_point``, p corrected for the
  search);
- the k configuration changes inside the interval (a new draft_model, target_model, temperature or acceptance value
  appearing mid-range): a plain z test at each, the hour holding the change left out of both sides. Testing where
  the configuration changed costs far less power than searching every hour, and most regressions start with a
  rollout, so the configuration changes get the larger share W of the level (the union bound holds for any fixed
  W).
Each found change compares the interval's hours before it with its hours after it (up to the neighbouring changes),
so a later change is measured against the level the series had settled at, not against the whole history.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl
from scipy import stats as sps

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
    tau: int  # series are per tau: acceptance_rate is only comparable at the same tau
    dimension: str
    value: str

    @property
    def fields(self) -> dict[str, str]:
        return {} if self.dimension == "deployment" else {self.dimension: self.value}


# Binary segmentation: a side of a change is searched again only when that change has p <= SPLIT_P, at most
# MAX_DEPTH levels deep (up to 2^MAX_DEPTH - 1 changes per series). On a series without change the first test fails
# with probability 1 - SPLIT_P and nothing more is tested, so healthy fleets add (almost) no tests to BH's family.
SPLIT_P = 0.05
MAX_DEPTH = 3
# Share of a split's test level given to the configuration changes (the scan gets 1 - CONFIG_WEIGHT): weighted
# Bonferroni, p = min(p_scan / (1 - W), k p_config / W).
CONFIG_WEIGHT = 0.8
STRATUM = "stratum"  # the column that splits a segment's hour by task x temperature bucket


@dataclass
class SegmentTest:
    """One segment's acceptance before vs after ``split`` (the first hour of the after side), within ``frame``."""

    segment: Segment
    split: datetime  # first hour of the after side
    acceptance: Comparison
    p_value: float  # scan-corrected when the split was searched for, else the plain two-sided z test
    hours: np.ndarray  # the compared interval's hour stamps
    # the compared interval's rows, per hour and stratum (between the neighbouring changes)
    frame: pl.DataFrame
    series: pl.DataFrame  # the segment's whole series, per hour and stratum
    q_value: float = float("nan")  # Benjamini-Hochberg adjusted across every tested segment
    before_end: datetime | None = None  # the before side ends here (default: at split)

    def compare(self, metric: str) -> Comparison:
        return compare_at(self.frame, metric, self.split, self.before_end)


def series(frame: pl.DataFrame) -> Iterator[tuple[Segment, pl.DataFrame]]:
    """Each segment's rows, sorted by hour, except a child segment that can never be reported (``redundant``)."""
    keys = ["deployment", "tau", "dimension", "value"]
    totals = frame.group_by(keys).agg(pl.col("n").sum())
    parents = {
        (r["deployment"], r["tau"]): r["n"]
        for r in totals.filter(pl.col("dimension") == "deployment").iter_rows(named=True)
    }
    for key, rows in frame.sort("hour").group_by(keys, maintain_order=True):
        seg = Segment(str(key[0]), int(key[1]), str(key[2]), str(key[3]))
        if not redundant(seg, float(rows["n"].sum()), parents.get((seg.deployment, seg.tau))):
            yield seg, rows


def redundant(seg: Segment, n: float, parent_n: float | None) -> bool:
    """A child holding all but fewer than MIN_REQUESTS of its deployment's requests (a single target_model, say).

    It is the deployment's test again (or nearly), and regression.explain never reports it (the rest of the
    deployment is too small to compare), so testing it would only enlarge Benjamini-Hochberg's family. The filter
    reads request counts, never acceptance, so it leaves the remaining tests' null distributions alone (independent
    filtering: Bourgon, Gentleman and Huber 2010, PNAS 107:9546).
    """
    return seg.dimension != "deployment" and parent_n is not None and parent_n - n < stats.MIN_REQUESTS


def hour_values(rows: pl.DataFrame) -> np.ndarray:
    """The distinct hours of ``rows``, sorted."""
    return rows["hour"].unique().sort().to_numpy()


def sums(rows: pl.DataFrame, metric: str) -> Ratio:
    cols = METRICS[metric]
    vals = [float(rows[c].fill_null(0).sum()) for c in cols]
    return stats.ratio_from_sums(*vals)


def compare(before: pl.DataFrame, after: pl.DataFrame, metric: str) -> Comparison:
    """after vs before: acceptance_rate within strata (``stats.compare_stratified``), other metrics pooled."""
    if metric != "acceptance_rate" or STRATUM not in before.columns:
        return stats.compare(sums(before, metric), sums(after, metric))
    cols = list(METRICS[metric])
    sides = [
        side.group_by(STRATUM).agg([pl.col(c).fill_null(0).sum() for c in cols]) for side in (before, after)
    ]
    both = sides[0].join(sides[1], on=STRATUM, how="full", coalesce=True, suffix="_after").fill_null(0)
    b = both.select(cols).to_numpy().T.astype(float)  # (6, strata)
    a = both.select([f"{c}_after" for c in cols]).to_numpy().T.astype(float)
    return stats.compare_stratified(b, a, strict=engine_windows(before) or engine_windows(after))


def engine_windows(rows: pl.DataFrame) -> bool:
    """Rows read from engine windows (queries/diagnose_windows.sql: a ``source``), whose strata are hours of the day.

    Their acceptance is compared within like hours only (``stats.stratified``'s ``strict``): windows carry no task, so
    a side holding other hours of the day than the other side holds another mix of traffic (code by day, chat by
    night), and the pooled rates would differ by that mix alone.
    """
    return "source" in rows.columns and rows["source"].is_not_null().any()


def compare_at(
    rows: pl.DataFrame, metric: str, split: datetime, before_end: datetime | None = None
) -> Comparison:
    """Hours before ``before_end`` (default ``split``) against hours from ``split`` on."""
    before = rows.filter(pl.col("hour") < (before_end or split))
    after = rows.filter(pl.col("hour") >= split)
    return compare(before, after, metric)


def compare_windows(
    rows: pl.DataFrame, metric: str, baseline: tuple[datetime, datetime], window: tuple[datetime, datetime]
) -> Comparison:
    """Hours with start <= hour < end on each side (windows are compared at hour granularity)."""
    before = rows.filter((pl.col("hour") >= baseline[0]) & (pl.col("hour") < baseline[1]))
    after = rows.filter((pl.col("hour") >= window[0]) & (pl.col("hour") < window[1]))
    return compare(before, after, metric)


def _arrays(rows: pl.DataFrame, metric: str, hours: np.ndarray) -> tuple[tuple[np.ndarray, ...], bool]:
    """The sums of ``metric`` per (stratum, hour), each of shape (S, len(hours)); one stratum for other metrics;
    and whether the last row is pooled-only (``sparse_strata``)."""
    cols = METRICS[metric]
    stratified = _stratified(rows, metric)
    strata = rows[STRATUM].cast(pl.Utf8).fill_null("").to_numpy() if stratified else np.zeros(rows.height)
    names, s_idx = np.unique(strata, return_inverse=True)
    pooled_only = False
    if stratified:
        s_idx, n_rows, pooled_only = sparse_strata(s_idx, rows["n"].fill_null(0).to_numpy(), len(names))
    else:
        n_rows = len(names)
    h_idx = np.searchsorted(hours, rows["hour"].to_numpy())
    out = []
    for c in cols:
        x = np.zeros((n_rows, len(hours)))
        np.add.at(x, (s_idx, h_idx), rows[c].fill_null(0).to_numpy().astype(float))
        out.append(x)
    return tuple(out), pooled_only


def sparse_strata(s_idx: np.ndarray, n: np.ndarray, n_strata: int) -> tuple[np.ndarray, int, bool]:
    """Merge the strata that can never enter a stratified comparison of these rows into one pooled-only last row.

    A stratum enters only with MIN_STRATUM requests on each side, so one with fewer than 2 MIN_STRATUM requests in
    all adds exactly 0 to every standardised sum; it counts only in the pooled ratios, whose acceptance sums are
    integers (exact in any order). Without this, a segment with thousands of sparse strata (task x temperature) over
    a year of hours held dense (strata x hours) arrays: gigabytes for a few thousand requests.
    Returns (new stratum index per row, number of stratum rows, whether the last row is the pooled-only one).
    """
    totals = np.bincount(s_idx, weights=n, minlength=n_strata)
    sparse = totals < 2 * stats.MIN_STRATUM
    if not sparse.any():
        return s_idx, n_strata, False
    kept = np.flatnonzero(~sparse)
    new = np.full(n_strata, kept.size)  # sparse strata -> the last row
    new[kept] = np.arange(kept.size)
    return new[s_idx], kept.size + 1, True


def config_splits(cfg: pl.DataFrame) -> dict[str, list[tuple[datetime, datetime]]]:
    """Per deployment, (before_end, split) around each mid-range configuration change: the hour holding the change
    (when it is not on the hour) belongs to neither side."""
    from specdiag.diagnose.config_changes import SETTINGS

    out: dict[str, list[tuple[datetime, datetime]]] = {}
    if cfg.is_empty():
        return out
    for key, rows in cfg.group_by("deployment"):
        start: datetime = rows["first_seen"].min()  # type: ignore[assignment]
        firsts = (
            # a tau change needs no test: series are per tau
            rows.filter(pl.col("setting").is_in([x for x in SETTINGS if x != "tau"]))
            .group_by(["setting", "value"])
            .agg(pl.col("first_seen").min())
            .filter(pl.col("first_seen") > start + timedelta(hours=1))["first_seen"]
        )
        hours = set()
        for at in firsts.to_list():
            h0 = at.replace(minute=0, second=0, microsecond=0)
            hours.add((h0, h0 if at == h0 else h0 + timedelta(hours=1)))
        out[str(key[0])] = sorted(hours)
    return out


def _stratified(rows: pl.DataFrame, metric: str) -> bool:
    return metric == "acceptance_rate" and STRATUM in rows.columns


def _best_config_split(
    n: np.ndarray,
    a: np.ndarray,
    d: np.ndarray,
    aa: np.ndarray,
    ad: np.ndarray,
    dd: np.ndarray,
    hours: np.ndarray,
    inside: list[tuple[datetime, datetime]],
    stratified: bool,
    pooled_only: bool = False,
    strict: bool = False,
) -> int | None:
    """Index in ``inside`` of the configuration change with the smallest p-value among those with MIN_REQUESTS on
    each side and a finite p (the first on ties), or None.

    Every candidate is ``compare_at(rows, metric, split, before_end)`` computed at once from the (stratum, hour) sums
    of ``_arrays``: a deployment with many configuration values (temperatures logged as 0.7000001, a new model id
    every hour) has as many candidates as hours, and a polars pass per candidate and segment made diagnose run for
    hours on such a store.
    """
    if not inside:
        return None
    x = np.stack([n, a, d, aa, ad, dd])  # (6, S, K)
    cums = np.concatenate([np.zeros((*x.shape[:2], 1)), np.cumsum(x, axis=2)], axis=2)  # (6, S, K + 1)
    stamps = hours.astype("datetime64[us]")
    ends = np.array([np.datetime64(b, "us") for b, _ in inside])
    starts = np.array([np.datetime64(s, "us") for _, s in inside])
    before = cums[:, :, np.searchsorted(stamps, ends, side="left")]  # hours < before_end
    after = cums[:, :, -1:] - cums[:, :, np.searchsorted(stamps, starts, side="left")]  # hours >= split
    if stratified:
        rb, sb, nb, ra, sa, na, _ = stats.stratified(before, after, pooled_only, strict)
    else:
        nb, na = before[0, 0], after[0, 0]
        rb, sb = stats.ratio_arrays(*before[:, 0])
        ra, sa = stats.ratio_arrays(*after[:, 0])
    # each side's effective requests over all its rows, as compare_at's Ratio.n_eff
    eb, ea = (stats.kish(x[2].sum(axis=0), x[5].sum(axis=0)) for x in (before, after))
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = ra - rb
        se = np.hypot(sb, sa)
        # stats.compare's test: Student's t with Welch-Satterthwaite degrees of freedom, as the normal z of its tail
        z = stats.t_as_z(diff / se, stats.welch_df(sb, eb, sa, ea))
        p = 2.0 * sps.norm.sf(np.abs(z))
    ok = (np.minimum(nb.astype(int), na.astype(int)) >= stats.MIN_REQUESTS) & (se > 0) & np.isfinite(diff)
    ok &= np.isfinite(p)
    if not ok.any():
        return None
    return int(np.argmin(np.where(ok, p, np.inf)))


def best_split(
    seg: Segment,
    rows: pl.DataFrame,
    series_rows: pl.DataFrame,
    splits: list[tuple[datetime, datetime]],
    metric: str = "acceptance_rate",
) -> SegmentTest | None:
    """The most likely single change within ``rows`` (a contiguous run of hours): scan or configuration change."""
    hour_list = rows["hour"].unique().sort()
    hours = hour_list.to_numpy()
    (n, a, d, aa, ad, dd), pooled_only = _arrays(rows, metric, hours)
    strict = _stratified(rows, metric) and engine_windows(rows)
    cp = stats.change_point(n, a, d, aa, ad, dd, pooled_only=pooled_only, strict=strict)
    best: SegmentTest | None = None
    if cp is not None:
        split = hour_list[cp.index]
        best = SegmentTest(seg, split, compare_at(rows, metric, split), cp.p_value, hours, rows, series_rows)
    first, last = rows["hour"].min(), rows["hour"].max()
    inside = [(b, s) for b, s in splits if first < b and s <= last]  # type: ignore[operator]
    pick = _best_config_split(
        n, a, d, aa, ad, dd, hours, inside, _stratified(rows, metric), pooled_only, strict
    )
    if pick is not None:
        before_end, split = inside[pick]
        c = compare_at(rows, metric, split, before_end)
        p_cfg = min(1.0, c.p_value * len(inside) / CONFIG_WEIGHT)
        p_scan = min(1.0, best.p_value / (1.0 - CONFIG_WEIGHT)) if best is not None else 1.0
        # report the configuration change's split when it is at least as good as the scan's, or strong alone
        if best is None or p_cfg <= p_scan or p_cfg <= 1e-3:
            best = SegmentTest(seg, split, c, p_cfg, hours, rows, series_rows, before_end=before_end)
        best.p_value = min(p_cfg, p_scan)
    return best


def segment_changes(
    seg: Segment,
    rows: pl.DataFrame,
    splits: list[tuple[datetime, datetime]],
    metric: str = "acceptance_rate",
    series_rows: pl.DataFrame | None = None,
    depth: int = 1,
) -> list[SegmentTest]:
    """Binary segmentation of one series: its best split, then (when p <= SPLIT_P) each side's, recursively."""
    series_rows = rows if series_rows is None else series_rows
    t = best_split(seg, rows, series_rows, splits, metric)
    if t is None:
        return []
    out = [t]
    if t.p_value <= SPLIT_P and depth < MAX_DEPTH:
        left = rows.filter(pl.col("hour") < (t.before_end or t.split))
        right = rows.filter(pl.col("hour") >= t.split)
        for side in (left, right):
            if side["hour"].n_unique() >= 2:
                out += segment_changes(seg, side, splits, metric, series_rows, depth + 1)
    return out


def detect(
    frame: pl.DataFrame, cfg: pl.DataFrame | None = None, metric: str = "acceptance_rate"
) -> list[SegmentTest]:
    """Every segment's changes in ``metric`` (binary segmentation), each with its p-value, in time order."""
    splits = config_splits(cfg) if cfg is not None else {}
    tests = []
    for seg, rows in series(frame):
        found = segment_changes(seg, rows, splits.get(seg.deployment, []), metric)
        tests += between_neighbours(sorted(found, key=lambda t: t.split), metric)
    return tests


def between_neighbours(found: list[SegmentTest], metric: str = "acceptance_rate") -> list[SegmentTest]:
    """Re-measure each significant change between its neighbouring significant changes of the same series.

    Binary segmentation finds the first change on the whole series, whose sides may hold the later ones; once all
    are known, each change's before/after comparison is the level just before it against the level just after it.
    The p-values stay those of the search that found each change.
    """
    cuts = [t for t in found if t.p_value <= SPLIT_P]
    for i, t in enumerate(cuts):
        rows = t.series
        if i > 0:
            rows = rows.filter(pl.col("hour") >= cuts[i - 1].split)
        if i + 1 < len(cuts):
            rows = rows.filter(pl.col("hour") < (cuts[i + 1].before_end or cuts[i + 1].split))
        t.frame, t.hours = rows, hour_values(rows)
        t.acceptance = compare_at(rows, metric, t.split, t.before_end)
    return found


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
            SegmentTest(seg, window[0], comparison, comparison.p_value, hour_values(kept), kept, kept)
        )
    return tests


def adjust(tests: list[SegmentTest]) -> None:
    """Benjamini-Hochberg across every tested segment, in place."""
    q = stats.benjamini_hochberg([t.p_value for t in tests])
    for t, qv in zip(tests, q):
        t.q_value = float(qv)
