"""Statistics for diagnose: the request is the unit, never the step.

Acceptance of one request's steps is correlated (an easy prompt is easy at every step), so a per-step binomial test
would be far too confident. Every rate here is a ratio of per-request sums, R = sum(a_i) / sum(d_i) (a_i accepted and
d_i drafted tokens of request i, or a_i = quality and d_i = 1 for a mean), and its standard error is the
cluster-robust (linearised, "delta method") one with the request as cluster:

    var(R) = n / (n - 1) * sum_i (a_i - R d_i)^2 / (sum_i d_i)^2
           = n / (n - 1) * (S_aa - 2 R S_ad + R^2 S_dd) / D^2

which needs only the sufficient statistics n, A, D, S_aa, S_ad, S_dd that DuckDB aggregates per segment and hour.
``bootstrap_ratio_ci`` resamples requests and is the cross-check used in the tests.

Two windows are compared within strata (``stratified``: task x temperature bucket in diagnose) and the strata's moves
are averaged with one set of weights for both sides (Mantel-Haenszel): the difference is what acceptance did at one
traffic mix, so a shift of the mix (more high-temperature traffic) is not read as a change, and the spread *between*
strata (acceptance at temperature 0 vs 0.7) leaves the standard error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

# Diagnose's defaults, documented in docs/diagnose.md.
FDR_Q = 0.05  # Benjamini-Hochberg false discovery rate across every tested segment
MIN_REQUESTS = 30  # per side of a comparison; fewer and the normal approximation is not trusted
MIN_TRIM = 0.05  # a change point is searched in the central [5%, 95%] of the series' variance time
MIN_STRATUM = 10  # requests a stratum needs on each side to enter a stratified comparison


@dataclass(frozen=True)
class Ratio:
    """A ratio of per-request sums with its cluster-robust standard error."""

    value: float
    se: float
    n: int
    # Kish's effective number of requests D^2 / S_dd: n when every request drafts as much, far fewer when a few long
    # requests carry most of the drafted tokens (the degrees of freedom of the z test, ``welch_df``)
    n_eff: float = math.inf

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        z = float(sps.norm.ppf(0.5 + level / 2))
        return (self.value - z * self.se, self.value + z * self.se)


def ratio_from_sums(n: float, a: float, d: float, aa: float, ad: float, dd: float) -> Ratio:
    """R = A / D with var(R) = n/(n-1) * (S_aa - 2 R S_ad + R^2 S_dd) / D^2 (request-clustered)."""
    if n < 2 or d <= 0:
        return Ratio(float("nan"), float("nan"), int(n))
    r = a / d
    resid = max(aa - 2.0 * r * ad + r * r * dd, 0.0)
    return Ratio(r, math.sqrt(n / (n - 1.0) * resid) / d, int(n), d * d / dd if dd > 0 else math.inf)


def kish(d: np.ndarray | float, dd: np.ndarray | float) -> np.ndarray:
    """Effective number of requests D^2 / S_dd of a side (inf where S_dd = 0)."""
    d, dd = np.asarray(d, dtype=float), np.asarray(dd, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(dd > 0, d * d / dd, np.inf)


def welch_df(
    se_b: np.ndarray | float,
    n_eff_b: np.ndarray | float,
    se_a: np.ndarray | float,
    n_eff_a: np.ndarray | float,
) -> np.ndarray:
    """Welch-Satterthwaite degrees of freedom of the difference of two ratios, each side's own n_eff - 1 (at least 1).

    The cluster-robust variance of a ratio is a sum over requests weighted by their drafted tokens: when a few long
    requests carry most of a side (heavy-tailed output lengths), it rests on a few effective requests, is noisy and
    biased low (each dominant request pulls R towards itself and shrinks its own residual), and the z statistic has
    far heavier tails than the normal: at 30 requests a side with log-normal lengths (sigma 1.2), |z| > 3.5 came 17
    times as often as the normal says. Student's t with these degrees of freedom brings that to within a few times
    nominal, and to the normal once n_eff is in the hundreds.
    """
    vb, va = np.square(np.asarray(se_b, dtype=float)), np.square(np.asarray(se_a, dtype=float))
    fb = np.maximum(np.asarray(n_eff_b, dtype=float) - 1.0, 1.0)
    fa = np.maximum(np.asarray(n_eff_a, dtype=float) - 1.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.square(vb + va) / (np.square(vb) / fb + np.square(va) / fa)
    return np.where(np.isfinite(df) & (df > 0), df, np.inf)


def t_as_z(t: np.ndarray | float, df: np.ndarray | float) -> np.ndarray:
    """The normal z with the same two-sided tail as Student's t with ``df`` degrees of freedom (sign kept); t itself
    where that tail underflows (|t| in the tens: a p-value of 0 either way, and a finite z keeps the split)."""
    t = np.asarray(t, dtype=float)
    with np.errstate(invalid="ignore"):
        z = np.sign(t) * sps.norm.isf(sps.t.sf(np.abs(t), df))
    return np.where(np.isfinite(z) | ~np.isfinite(t), z, t)


def ratio_arrays(
    n: np.ndarray, a: np.ndarray, d: np.ndarray, aa: np.ndarray, ad: np.ndarray, dd: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised ``ratio_from_sums``: (R, se) per row; NaN where n < 2 or D = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(d > 0, a / d, np.nan)
        resid = np.maximum(aa - 2.0 * r * ad + r * r * dd, 0.0)
        se = np.sqrt(n / (n - 1.0) * resid) / d
    bad = (n < 2) | (d <= 0)
    return np.where(bad, np.nan, r), np.where(bad, np.nan, se)


@dataclass(frozen=True)
class Comparison:
    """after - before, a two-sided test on the difference of two independent request-clustered ratios: Student's t
    with Welch-Satterthwaite degrees of freedom from each side's effective requests (``welch_df``), ``z`` the normal
    deviate of the same tail (the plain z when every request drafts alike and n is large)."""

    before: Ratio
    after: Ratio
    diff: float
    se: float
    z: float
    p_value: float


def stratified(
    before: np.ndarray, after: np.ndarray, pooled_only: bool = False, strict: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardised ratios of two sides at one set of stratum weights, per column: (R_b, se_b, n_b, R_a, se_a, n_a,
    thin).

    ``before`` and ``after`` hold the sums (n, A, D, S_aa, S_ad, S_dd) of each stratum s, shape (6, S, K) for K
    comparisons at once (the splits of a scan). A stratum enters when it has MIN_STRATUM requests on both sides; with
    Mantel-Haenszel weights on its drafted tokens D (Greenland and Robins 1985, the weights of the stratified risk
    difference), normalised over the entering strata,

        w_s ~ D_s,b D_s,a / (D_s,b + D_s,a)
        R_b = sum_s w_s R_s,b,    var(R_b) = sum_s w_s^2 var(R_s,b)    (strata independent; same for the after side)

    each R_s and var(R_s) the request-clustered ratio of ``ratio_from_sums``. The weight follows the stratum's share
    of the traffic when the mix is steady (D_s,b / D_b = D_s,a / D_a) and shrinks a stratum seen thinly on one side,
    whose ratio there is noisy and its variance poorly estimated (a scan's split near the end of a series); for
    the thin side, w_s ~ D_s and var(R_b) is the residual sum over all its requests. A stratum seen on one side only (or
    too thinly on one) says nothing about a change and is left out. When no stratum enters (a temperature change
    that moved all of a task's traffic to another bucket: then the change of mix is the change; or a split near the
    end of a series), the pooled ratios of each side are returned, as for a series without strata. When some enter
    but hold fewer than MIN_REQUESTS requests on a side, the pooled ratios are returned too and ``thin`` is True: a
    scan skips such a split, whose stratified z would rest on a few requests and whose pooled z on the mix. With
    one stratum this is the plain comparison.

    ``pooled_only``: the last stratum row holds the merged sums of strata that can never enter (fewer than
    2 MIN_STRATUM requests in all): it counts in the pooled ratios only (see ``sparse_strata``).
    ``strict``: no pooled fallback; a comparison whose entering strata hold fewer than MIN_REQUESTS requests on a side
    is NaN and ``thin`` (engine windows, whose strata are hours of the day: pooling sides that share no hour of the
    day compares day traffic with night traffic, the mix the strata are there to hold fixed).
    """
    rb, sb = ratio_arrays(*before)
    ra, sa = ratio_arrays(*after)
    ok = (before[0] >= MIN_STRATUM) & (after[0] >= MIN_STRATUM)
    if pooled_only:
        ok[-1] = False
    ok &= np.isfinite(rb) & np.isfinite(ra) & np.isfinite(sb) & np.isfinite(sa)
    with np.errstate(divide="ignore", invalid="ignore"):
        mh = np.where(ok, before[2] * after[2] / (before[2] + after[2]), 0.0)
        kept = mh.sum(axis=0)
        w = mh / kept
        std_b, std_a = (np.where(ok, w * r, 0.0).sum(axis=0) for r in (rb, ra))
        se_b, se_a = (np.sqrt(np.where(ok, (w * s) ** 2, 0.0).sum(axis=0)) for s in (sb, sa))
    n_b, n_a = (np.where(ok, x[0], 0.0).sum(axis=0) for x in (before, after))
    use = (n_b >= MIN_REQUESTS) & (n_a >= MIN_REQUESTS)
    pb, psb = ratio_arrays(*before.sum(axis=1))
    pa, psa = ratio_arrays(*after.sum(axis=1))
    if strict:
        pb = psb = pa = psa = np.full(np.shape(use), np.nan)
        kept = np.ones(np.shape(use))  # every comparison without enough entering strata is thin
    return (
        np.where(use, std_b, pb),
        np.where(use, se_b, psb),
        np.where(use, n_b, before[0].sum(axis=0)),
        np.where(use, std_a, pa),
        np.where(use, se_a, psa),
        np.where(use, n_a, after[0].sum(axis=0)),
        ~use & (kept > 0),
    )


def compare_stratified(before: np.ndarray, after: np.ndarray, strict: bool = False) -> Comparison:
    """``compare`` of the standardised ratios of two sides; ``before``/``after``: shape (6, S) stratum sums.
    ``strict``: see ``stratified`` (NaN, i.e. untested, when too few strata enter)."""
    rb, sb, nb, ra, sa, na, _ = (
        float(x[0]) for x in stratified(before[:, :, None], after[:, :, None], strict=strict)
    )
    eb, ea = (float(kish(x[2].sum(), x[5].sum())) for x in (before, after))
    return compare(Ratio(rb, sb, int(nb), eb), Ratio(ra, sa, int(na), ea))


def compare(before: Ratio, after: Ratio) -> Comparison:
    diff = after.value - before.value
    se = math.hypot(before.se, after.se)
    if not (se > 0 and math.isfinite(diff)):
        return Comparison(before, after, diff, se, float("nan"), float("nan"))
    # Student's t on the effective requests of each side (``welch_df``), reported as the normal z of the same tail
    z = float(t_as_z(diff / se, welch_df(before.se, before.n_eff, after.se, after.n_eff)))
    return Comparison(before, after, diff, se, z, float(2.0 * sps.norm.sf(abs(z))))


def scan_p_value(z_max: float, t0: float, t1: float) -> float:
    """P(max over split points of |two-sample z| >= z_max) under no change.

    The standardised CUSUM Z(t) = B(t) / sqrt(t (1 - t)) of a Brownian bridge B is, in u = log(t / (1 - t)), a
    stationary Ornstein-Uhlenbeck process with correlation exp(-|h| / 2); the tail of its maximum over
    t in [t0, t1] is (Siegmund 1988; Pickands constant 1)

        P(max |Z| > b) ~= 2 (1 - Phi(b)) + b phi(b) log(t1 (1 - t0) / (t0 (1 - t1)))

    which is conservative for a discretely observed series. Capped at 1.
    """
    if not math.isfinite(z_max):
        return float("nan")
    b = abs(z_max)
    span = math.log(t1 * (1 - t0) / (t0 * (1 - t1)))
    return float(min(1.0, 2.0 * sps.norm.sf(b) + b * sps.norm.pdf(b) * span))


@dataclass(frozen=True)
class ChangePoint:
    index: int  # first bucket after the change
    z: float  # two-sample z of after - before at that split (request-clustered)
    p_value: float  # scan_p_value: corrected for having searched every split
    t: float  # the split's position in variance time, in (0, 1)


def change_point(
    n: np.ndarray,
    a: np.ndarray,
    d: np.ndarray,
    aa: np.ndarray,
    ad: np.ndarray,
    dd: np.ndarray,
    trim: float = MIN_TRIM,
    min_requests: int = MIN_REQUESTS,
    pooled_only: bool = False,
    strict: bool = False,
) -> ChangePoint | None:
    """Most likely single change in a ratio series of time buckets (binary segmentation's first split).

    Each argument has shape (K,) for K time buckets, or (S, K) for S strata (``stratified``). For every split k the
    request-clustered two-sample z of (buckets >= k) - (buckets < k) is computed from cumulative sufficient
    statistics, within strata when there are several; the split with the largest |z| wins, and its p-value accounts
    for the search (``scan_p_value``). Splits with fewer than ``min_requests`` on a side (or, with strata, a thin
    stratified comparison), or outside [trim, 1 - trim] of the series' total variance, are not considered. Returns None when no split qualifies.
    ``pooled_only``: the last stratum row is pooled-only; ``strict``: no pooled fallback (``stratified``).
    """
    x = np.stack([np.atleast_2d(np.asarray(v, dtype=float)) for v in (n, a, d, aa, ad, dd)])  # (6, S, K)
    k = x.shape[2]
    if k < 2:
        return None
    cums = np.cumsum(x, axis=2)[:, :, :-1]  # before split j + 1: buckets 0..j
    after = x.sum(axis=2, keepdims=True) - cums
    rb, seb, _, ra, sea, _, thin = stratified(cums, after, pooled_only, strict)
    pooled = x.sum(axis=1)  # (6, K): the series' totals per bucket
    n_before = np.cumsum(pooled[0])[:-1]
    n_total = float(pooled[0].sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (ra - rb) / np.hypot(seb, sea)
        # Student's t on each side's effective requests (``welch_df``), as the normal z of the same tail
        df = welch_df(
            seb,
            kish(cums[2].sum(axis=0), cums[5].sum(axis=0)),
            sea,
            kish(after[2].sum(axis=0), after[5].sum(axis=0)),
        )
        z = t_as_z(z, df)
        # variance time: the share of the total residual variance before the split, under the pooled ratio
        r_all = pooled[1].sum() / pooled[2].sum() if pooled[2].sum() > 0 else np.nan
        resid = np.maximum(pooled[3] - 2 * r_all * pooled[4] + r_all**2 * pooled[5], 0.0)
        t = np.cumsum(resid)[:-1] / resid.sum()
    ok = (n_before >= min_requests) & (n_total - n_before >= min_requests) & (t >= trim) & (t <= 1 - trim)
    ok &= np.isfinite(z) & ~thin
    if not ok.any():
        return None
    zs = np.where(ok, np.abs(z), -1.0)
    best = int(np.argmax(zs))
    return ChangePoint(best + 1, float(z[best]), scan_p_value(float(z[best]), trim, 1 - trim), float(t[best]))


def benjamini_hochberg(p_values: list[float] | np.ndarray) -> np.ndarray:
    """BH-adjusted p-values (scipy.stats.false_discovery_control); NaN stays NaN (untested)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = sps.false_discovery_control(p[ok], method="bh")
    return out


def bootstrap_ratio_ci(
    a: np.ndarray, d: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile CI of sum(a) / sum(d) resampling requests (rows) with replacement."""
    rng = np.random.default_rng(seed)
    a = np.asarray(a, dtype=float)
    d = np.asarray(d, dtype=float)
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))
    boots = a[idx].sum(axis=1) / d[idx].sum(axis=1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
