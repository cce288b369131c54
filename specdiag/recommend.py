"""Recommend tau: analytically from (alpha, c), or per deployment and segment from the store.

Speedup of tau over the target alone (see :mod:`specdiag.speedup`):

    speedup(tau) = E[tokens | tau] * t_target(1, B) / (tau * t_draft + t_target(tau + 1, B))

with E[tokens | tau] = 1 + sum_{k<=tau} prod_{i<=k} alpha_i from the censored per-position estimate
(:mod:`specdiag.acceptance`) and t from the fitted or profiled cost model (:mod:`specdiag.costs`). Both times are
linear in B, so the speedup of a mix of batch sizes equals the speedup at the step-weighted mean batch size.

Confidence intervals resample a deployment's requests (the unit whose steps are correlated): each bootstrap
replicate draws multinomial weights over them and, from the same weights, recomputes each segment's per-position
counts, the estimator and, for costs fitted from steps, the cost fit (weighted per-request sufficient statistics,
:func:`specdiag.costs.fit_from_sums`), then the whole curve. Replay's measured profiles and a given --cost are held
fixed: those intervals cover acceptance uncertainty only (``ci_covers`` says which).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np

from specdiag import policies
from specdiag.acceptance import conditional_acceptance, counts_by_unit, hazard_matrix
from specdiag.costs import COST_SUMS, CostFit, all_cost_fits, fit_from_sums, fit_from_unit_sums
from specdiag.errors import UsageError
from specdiag.queries import bound, find_query
from specdiag.speedup import (
    MAX_TAU,
    TAU_LIMIT,
    CostModel,
    alpha_from_mal,
    best_tau,
    expected_tokens,
    speedup_curve,
)

# columns of `requests` that --by may name (identifiers are never taken from user text)
SEGMENT_COLUMNS = ("task", "target_model", "draft_model", "temperature", "top_p", "acceptance", "source")
CI_LEVEL = 0.95
BOOT_CHUNK = 25  # bootstrap replicates per matrix product
BOOT_CELLS = 4_000_000  # at most this many replicate x request weights in memory at once (32 MB of floats)


def analytic(
    alpha: float, cost_ratio: float, tau: int | None = None, max_tau: int = MAX_TAU
) -> dict[str, Any]:
    """Leviathan et al. 2023 Eq. (1) and Thm 3.8 for an i.i.d. acceptance alpha and cost ratio c.

    expected_speedup and expected_tokens_per_step are for ``tau`` when given, else for the recommended tau.
    """
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"--alpha {alpha}: must lie in [0, 1]")
    _check_cost(cost_ratio)
    if max_tau < 1:
        raise UsageError(f"--max-tau {max_tau}: must be >= 1")
    if tau is not None and tau < 0:
        raise UsageError(f"--tau {tau}: must be >= 0")
    search = max_tau  # the recommendation searches 0..max_tau; the curve also covers a larger --tau
    # free verification (compute_ms = 0) and t_target = 1: Thm 3.8's setting, c = draft_ms_per_token
    cost = CostModel(floor_ms=1.0, compute_ms=0.0, draft_ms_per_token=cost_ratio)
    curve = speedup_curve(alpha, cost, 1.0, max(max_tau, tau or 0))
    best = best_tau(curve[: search + 1])
    chosen = curve[best if tau is None else tau]
    return {
        "recommended_tau": best,
        "expected_speedup": chosen["speedup"],
        "expected_tokens_per_step": chosen["expected_tokens_per_step"],
        "curve": curve,
    }


def _check_cost(cost_ratio: float) -> None:
    """--cost, in analytic mode and from the store alike: a finite c >= 0."""
    if not (np.isfinite(cost_ratio) and cost_ratio >= 0.0):
        raise UsageError(f"--cost {cost_ratio}: must be a finite number >= 0")


def _check_by(by: Sequence[str]) -> tuple[str, ...]:
    for col in by:
        if col not in SEGMENT_COLUMNS:
            raise UsageError(
                f"--by {col}: not a segment column", hint=f"choose from {', '.join(SEGMENT_COLUMNS)}"
            )
    return tuple(dict.fromkeys(by))


@dataclass(frozen=True)
class GroupUnits:
    """The resampling units of one (deployment, *segment) group with speculative steps."""

    idx: np.ndarray  # (g,) positions of its units among the deployment's units
    at_risk: np.ndarray  # (g, max_tau) steps that tried each draft position
    accepted: np.ndarray  # (g, max_tau) steps that accepted it


@dataclass(frozen=True)
class CostUnits:
    """Per-request sufficient statistics of one deployment's cost fit (requests with timed steps)."""

    idx: np.ndarray  # (m,) positions of these requests among the deployment's units
    sums: np.ndarray  # (m, len(COST_SUMS)), see specdiag.costs.COST_SUMS
    draft_model: np.ndarray | None = None  # (m,) draft model of each request, when drafts are segments


@dataclass
class DeploymentUnits:
    """Every resampling unit of one deployment: requests (speculative or tau = 0 control) and engine windows."""

    n_units: int = 0
    groups: dict[tuple[Any, ...], GroupUnits] = field(default_factory=dict)
    costs: CostUnits | None = None


def _load_units(
    con: duckdb.DuckDBPyConnection, by: tuple[str, ...], max_pos: int, with_windows: bool = True
) -> tuple[dict[str, DeploymentUnits], dict[str, list[tuple[int, int]]]]:
    """Per deployment: its groups' per-unit position counts and its requests' cost sums; and its batch sizes.

    DuckDB scans the steps once (``queries/recommend_histogram.sql``) into a temporary table of a few rows per
    request; acceptance counts, cost sums and batch sizes are three small aggregates of that table. Only numeric
    columns per unit cross into numpy; segment keys come back once per group. ``with_windows`` False leaves out the
    engine windows of deployments without request records.
    """
    query = find_query("recommend_histogram")
    with bound(con, query, {"with_windows": str(with_windows).lower()}):
        con.execute(f"create or replace temp table recommend_histogram as {query.sql}")
    try:
        acceptance = _acceptance_units(con, by, max_pos)
        costs = _cost_units(con, with_draft_model="draft_model" in by)
        sql = """
            select deployment, batch_size, sum(steps) as steps from recommend_histogram
            where drafted > 0 and batch_size is not null group by all order by all
        """
        batches: dict[str, list[tuple[int, int]]] = {}
        for dep, batch, steps in con.execute(sql).fetchall():
            batches.setdefault(dep, []).append((int(batch), int(steps)))
    finally:
        con.execute("drop table if exists recommend_histogram")
    by_dep: dict[str, list[tuple[Any, ...]]] = {}  # each deployment's groups, in the SQL's order
    for key in acceptance:
        by_dep.setdefault(key[0], []).append(key)
    out: dict[str, DeploymentUnits] = {}
    for dep in dict.fromkeys([k[0] for k in acceptance] + sorted(costs)):  # in the SQL's group order
        unit_keys = [acceptance[k][0] for k in by_dep.get(dep, [])]
        cost = costs.get(dep)
        if cost is not None:
            unit_keys.append(cost[0])
        keys = _distinct(np.sort(np.concatenate(unit_keys)))  # the deployment's units, sorted
        dep_units = DeploymentUnits(n_units=keys.size)
        for key in by_dep.get(dep, []):
            g_keys, at_risk, accepted = acceptance[key]
            dep_units.groups[key] = GroupUnits(np.searchsorted(keys, g_keys), at_risk, accepted)
        if cost is not None:
            dep_units.costs = CostUnits(np.searchsorted(keys, cost[0]), cost[1], cost[2])
        out[dep] = dep_units
    return out, batches


def _distinct(sorted_keys: np.ndarray) -> np.ndarray:
    """Distinct values of a sorted array (np.unique without return_inverse took seconds on 1M sorted int64 keys)."""
    return sorted_keys[np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]])]


def _acceptance_units(
    con: duckdb.DuckDBPyConnection, by: tuple[str, ...], max_pos: int
) -> dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(deployment, *segment) -> (unit keys, at_risk, accepted), counts (units, max_pos) from the histogram.

    SQL numbers the groups and maps each unit (one row per unit) to its group; the histogram rows come back as they
    are, unsorted, and numpy sends each to its unit by binary search (sorting and re-aggregating the millions of
    histogram rows in SQL cost more).
    """
    by = _check_by(by)  # identifiers in the SQL below: only SEGMENT_COLUMNS
    keys = ["u.deployment", *(f"r.{c}" for c in by)]
    names = ["deployment", *by]
    join = "join requests as r on r.rowid = u.unit_key" if by else ""  # windows carry no segment columns
    match = " and ".join(f"g.{n} is not distinct from u.{n}" for n in names)
    con.execute(
        f"""
        create or replace temp table recommend_units as
        select u.unit_key, {", ".join(f"{k} as {n}" for k, n in zip(keys, names))}
        from (select distinct unit_key, deployment from recommend_histogram where drafted > 0) as u {join}
        """
    )
    try:
        con.execute(
            f"""
            create or replace temp table recommend_groups as
            select row_number() over (order by {", ".join(names)}) - 1 as grp, *
            from (select distinct {", ".join(names)} from recommend_units)
            """
        )
        groups = con.execute(f"select grp, {', '.join(names)} from recommend_groups order by grp").fetchall()
        unit_groups = con.execute(
            f"""
            select u.unit_key, g.grp from recommend_units as u join recommend_groups as g on {match}
            order by u.unit_key
            """
        ).fetchnumpy()
    finally:
        con.execute("drop table if exists recommend_units")
        con.execute("drop table if exists recommend_groups")
    rows = con.execute(
        "select unit_key, drafted, accepted, steps from recommend_histogram where drafted > 0"
    ).fetchnumpy()
    unit_key = np.asarray(unit_groups["unit_key"], dtype=np.int64)  # sorted, one per unit
    unit_grp = np.asarray(unit_groups["grp"], dtype=np.int64)
    row_unit = np.searchsorted(unit_key, np.asarray(rows["unit_key"], dtype=np.int64))
    row_unit = np.minimum(row_unit, max(unit_key.size - 1, 0))
    # histogram rows of a unit outside every group (a window when segments are asked for) are left out
    known = unit_key[row_unit] == rows["unit_key"] if unit_key.size else np.zeros(row_unit.size, dtype=bool)
    drafted = np.asarray(rows["drafted"], dtype=np.int64)
    accepted = np.asarray(rows["accepted"], dtype=np.int64)
    steps = np.asarray(rows["steps"], dtype=float)
    # each group's units and histogram rows as slices of one stable sort by group (a mask per group was
    # groups x rows: minutes for tens of thousands of (deployment, task) groups)
    unit_order = np.argsort(unit_grp, kind="stable")  # by group, then key order
    unit_cuts = np.searchsorted(unit_grp[unit_order], np.arange(len(groups) + 1), side="left")
    row_grp = np.where(known, unit_grp[row_unit] if unit_grp.size else -1, -1)
    row_order = np.argsort(row_grp, kind="stable")  # by group, then as returned
    row_cuts = np.searchsorted(row_grp[row_order], np.arange(len(groups) + 1), side="left")
    out = {}
    for grp, *key in groups:
        members = unit_order[unit_cuts[grp] : unit_cuts[grp + 1]]  # the group's units, in key order
        in_group = row_order[row_cuts[grp] : row_cuts[grp + 1]]
        unit = np.searchsorted(members, row_unit[in_group])  # index of each row's unit within the group
        at_risk, acc = counts_by_unit(
            unit, drafted[in_group], accepted[in_group], steps[in_group], members.size, max_pos
        )
        out[tuple(key)] = (unit_key[members], at_risk, acc)
    return out


def _cost_units(
    con: duckdb.DuckDBPyConnection, with_draft_model: bool
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """deployment -> (request keys, sums (requests, len(COST_SUMS)), draft models or None), timed requests only.

    x = (drafted + 1) * B is constant within a histogram row, so sum x = steps * x, sum x*y = x * sum y, etc.
    """
    draft = "any_value(r.draft_model)" if with_draft_model else "null"  # fixed text, no user input
    sql = f"""
        with h as (
            select *, cast(coalesce(batch_size, 1) as double) as b,
                   (drafted + 1) * cast(coalesce(batch_size, 1) as double) as x
            from recommend_histogram where timed_steps > 0
        )
        select h.deployment, h.unit_key, {draft} as draft_model,
               sum(h.timed_steps) as n,
               sum(h.timed_steps * h.x) as sx,
               sum(h.timed_steps * h.x * h.x) as sxx,
               sum(h.x * h.verify_ms) as sxy,
               sum(h.verify_ms) as sy,
               sum(h.verify_ms_sq) as syy,
               coalesce(sum(h.draft_ms) filter (where h.drafted > 0), 0) as draft_ms,
               coalesce(sum(h.drafted_timed) filter (where h.drafted > 0), 0) as drafted_timed,
               coalesce(sum(h.timed_steps) filter (where h.drafted > 0), 0) as spec_steps,
               coalesce(sum(h.timed_steps * h.b) filter (where h.drafted > 0), 0) as spec_batch
        from h {"join requests as r on r.rowid = h.unit_key" if with_draft_model else ""}
        group by h.deployment, h.unit_key
        order by h.deployment, h.unit_key
    """
    cols = con.execute(sql).fetchnumpy()
    deps = np.asarray(cols["deployment"], dtype=object)
    if deps.size == 0:
        return {}
    sums = np.column_stack([np.asarray(cols[c], dtype=float) for c in COST_SUMS])
    keys = np.asarray(cols["unit_key"], dtype=np.int64)
    cuts = np.flatnonzero(deps[1:] != deps[:-1]) + 1
    out = {}
    for lo, hi in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [deps.size]])):
        models = np.asarray(cols["draft_model"][lo:hi], dtype=object) if with_draft_model else None
        out[str(deps[lo])] = (keys[lo:hi], sums[lo:hi], models)
    return out


def _draft_costs(cost: CostUnits) -> dict[str | None, float]:
    """draft_model -> ms per drafted token over the deployment's requests with that draft (when drafts are segments)."""
    if cost.draft_model is None:
        return {}
    out = {}
    for model in dict.fromkeys(cost.draft_model.tolist()):
        rows = cost.sums[cost.draft_model == model]
        tokens = rows[:, COST_SUMS.index("drafted_timed")].sum()
        if tokens > 0:
            out[model] = float(rows[:, COST_SUMS.index("draft_ms")].sum() / tokens)
    return out


@dataclass(frozen=True)
class _Group:
    """What the store logged of one (deployment, *segment): configured tau, requests, speculative requests."""

    tau: int  # most common configured tau > 0; 0 when only control traffic was logged
    requests: int  # 0 for a deployment known only from engine windows
    speculative: int  # requests that drafted something


# The key columns are chosen by a bound list (names from SEGMENT_COLUMNS only): the statement is fixed text.
# A group's current tau is the one its deployment runs now: the most common tau > 0 in the deployment's last day of
# speculative traffic (after a planned tau change, the tau it left would be judged), else of the whole range.
_REQUEST_GROUPS = """
    select columns(lambda c: list_contains($keys, c)),
           coalesce(mode(tau) filter (where tau > 0 and ts >= _last - interval 1 day), mode(tau) filter (where tau > 0),
                    0) as _tau,
           count(*) as _requests, count(*) filter (where drafted > 0) as _speculative
    from (select *, max(ts) filter (where tau > 0) over (partition by deployment) as _last from requests)
    group by all
"""
_WINDOW_GROUPS = """
    select deployment,
           coalesce(mode(tau) filter (where tau > 0 and end_ts >= _last - interval 1 day),
                    mode(tau) filter (where tau > 0), 0)
    from (select *, max(end_ts) filter (where tau > 0) over (partition by deployment) as _last from windows)
    group by all
"""


def _groups(con: duckdb.DuckDBPyConnection, by: tuple[str, ...]) -> dict[tuple[Any, ...], _Group]:
    """Per (deployment, *segment) of the requests, in key order; without ``by`` also each deployment known only
    from engine windows (no segment columns there)."""
    keys = ["deployment", *_check_by(by)]
    cur = con.execute(_REQUEST_GROUPS, {"keys": keys})
    names = [d[0] for d in cur.description]
    order = [names.index(k) for k in keys]  # columns() keeps the table's order; keys follow --by's
    out = {
        tuple(row[i] for i in order): _Group(int(row[-3]), int(row[-2]), int(row[-1]))
        for row in sorted(cur.fetchall(), key=lambda r: tuple(str(r[i]) for i in order))
    }
    if not by:
        for dep, tau in con.execute(_WINDOW_GROUPS).fetchall():
            out.setdefault((dep,), _Group(int(tau), 0, 0))
    return out


def resample_weights(rng: np.random.Generator, units: int, size: int) -> np.ndarray:
    """(size, units) bootstrap weights: how often each unit is drawn when ``units`` units are resampled with
    replacement, i.e. multinomial(units, 1 / units) counts, drawn as uniform indices and counted (several times
    faster than ``Generator.multinomial``, which draws one binomial per unit)."""
    out = np.empty((size, units))
    for row in out:
        row[:] = np.bincount(rng.integers(0, units, units), minlength=units)
    return out


def _curves(
    cond: np.ndarray,
    floor_ms: np.ndarray | float,
    compute_ms: np.ndarray | float,
    draft_ms: np.ndarray | float,
    batch_size: np.ndarray | float,
    max_tau: int,
) -> np.ndarray:
    """(n, max_tau + 1) speedups from conditional acceptance (n, >= max_tau) and costs, scalars or (n,) arrays:
    E(tau) * t(1, B) / (tau * t_draft + t(tau + 1, B)), t(k, B) = floor_ms + compute_ms * k * B (ms)."""
    cond = np.atleast_2d(cond)[:, :max_tau]
    tokens = np.concatenate(
        [np.ones((cond.shape[0], 1)), 1.0 + np.cumsum(np.cumprod(cond, axis=1), axis=1)], axis=1
    )
    f, c, d, b = (
        np.reshape(np.asarray(v, dtype=float), (-1, 1)) for v in (floor_ms, compute_ms, draft_ms, batch_size)
    )
    taus = np.arange(max_tau + 1)[None, :]
    # a bootstrap replicate whose resampled steps cost nothing gives 0 / 0: NaN, left out of the interval
    with np.errstate(invalid="ignore", divide="ignore"):
        return tokens * (f + c * b) / (taus * d + f + c * (taus + 1) * b)


def curve_speedups(cond: np.ndarray, cost: CostModel, batch_size: float, max_tau: int) -> np.ndarray:
    """Vectorised speedup curve: cond (n, >= max_tau) conditional acceptance -> (n, max_tau + 1) speedups."""
    return _curves(cond, cost.floor_ms, cost.compute_ms, cost.draft_ms_per_token, batch_size, max_tau)


@dataclass(frozen=True)
class GroupCost:
    """The costs a group's curve uses: the point (or fixed) model and batch size, and which draft model's cost."""

    model: CostModel
    batch_size: float
    draft_model: Any = None  # with drafts as segments: this group's draft model
    by_draft: bool = False  # use the replicate's draft cost of draft_model instead of the pooled one


def bootstrap_deployment(
    units: DeploymentUnits,
    keys: Sequence[tuple[Any, ...]],
    costs: dict[tuple[Any, ...], GroupCost],
    refit: bool,
    max_tau: int,
    n_boot: int,
    rng: np.random.Generator,
) -> dict[tuple[Any, ...], np.ndarray]:
    """(n_boot, max_tau + 1) speedup curves per group of one deployment, its requests resampled with replacement.

    Each replicate draws multinomial weights over every unit of the deployment (requests of all its segments,
    tau = 0 control requests, engine windows) and recomputes, from the same weights: each group's per-position
    counts and censored estimator (tail included); with ``refit``, the cost fit from the weighted per-request sums
    (floor, compute, draft cost and mean batch size); else the groups' costs are held fixed (replay profiles, --cost).
    Weights enter only through matrix products (replicates, units) @ (units, statistics).
    """
    n = units.n_units
    if not keys or n_boot <= 0:
        return {k: np.empty((0, max_tau + 1)) for k in keys}
    cost_units = units.costs if refit else None
    models: list[Any] = []
    onehot = None
    if cost_units is not None and cost_units.draft_model is not None:
        models = list(dict.fromkeys(cost_units.draft_model.tolist()))
        onehot = np.stack([cost_units.draft_model == m for m in models], axis=1).astype(float)
    chunk = max(1, min(BOOT_CHUNK, BOOT_CELLS // max(n, 1)))
    counts = {}
    for key in keys:  # positions never tried are zero in every replicate: leave them out of the products
        group = units.groups[key]
        tried = max(int(np.flatnonzero(group.at_risk.any(axis=0)).max(initial=0)) + 1, 1)
        counts[key] = np.ascontiguousarray(np.hstack([group.at_risk[:, :tried], group.accepted[:, :tried]]))
    curves: dict[tuple[Any, ...], list[np.ndarray]] = {k: [] for k in keys}
    with policies.one_blas_thread():
        for start in range(0, n_boot, chunk):
            weights = resample_weights(rng, n, min(chunk, n_boot - start))
            fit = by_model = None
            if cost_units is not None:
                w = weights[:, cost_units.idx]
                fit = fit_from_sums(w @ cost_units.sums)
                if onehot is not None:
                    cols = cost_units.sums[:, [COST_SUMS.index("draft_ms"), COST_SUMS.index("drafted_timed")]]
                    with np.errstate(invalid="ignore", divide="ignore"):
                        by_model = (w @ (onehot * cols[:, :1])) / (w @ (onehot * cols[:, 1:]))
            for key in keys:
                cost = costs[key]
                sums = weights[:, units.groups[key].idx] @ counts[key]
                tried = sums.shape[1] // 2
                cond, _, _ = hazard_matrix(sums[:, :tried], sums[:, tried:], max_tau)
                if fit is None:
                    curves[key].append(curve_speedups(cond, cost.model, cost.batch_size, max_tau))
                    continue
                draft = fit.draft_ms_per_token
                if by_model is not None and cost.by_draft and cost.draft_model in models:
                    draft = by_model[:, models.index(cost.draft_model)]
                curves[key].append(
                    _curves(cond, fit.floor_ms, fit.compute_ms, draft, fit.batch_mean, max_tau)
                )
    return {k: np.concatenate(v) if v else np.empty((0, max_tau + 1)) for k, v in curves.items()}


def _batch_table(
    cond: np.ndarray, cost: CostModel, batches: list[tuple[int, int]], max_tau: int
) -> list[dict[str, Any]]:
    """Best tau per batch size (power-of-two buckets when many sizes), the policy shape engines accept."""
    if len({b for b, _ in batches}) < 2:
        return []
    buckets: dict[int, list[tuple[int, int]]] = {}
    for b, n in batches:
        key = b if len(batches) <= 8 else 1 << int(np.floor(np.log2(max(b, 1))))
        buckets.setdefault(key, []).append((b, n))
    rows = []
    for key, members in sorted(buckets.items()):
        steps = sum(n for _, n in members)
        mean_b = sum(b * n for b, n in members) / steps
        curve = speedup_curve(cond, cost, mean_b, max_tau)
        tau = best_tau(curve)
        rows.append(
            {
                "batch_size": key,  # the exact size, or the power-of-two bucket's lower bound
                "batch_size_max": max(b for b, _ in members),
                "steps": steps,
                "recommended_tau": tau,
                "expected_speedup": curve[tau]["speedup"],
            }
        )
    return rows


def _recommend_group(
    deployment: str,
    segment: dict[str, Any],
    units: GroupUnits,
    fit: CostFit,
    group_cost: GroupCost,
    boots: np.ndarray,
    current_tau: int,
    batches: list[tuple[int, int]],
    max_tau: int,
) -> dict[str, Any]:
    at_risk, accepted = units.at_risk, units.accepted
    est = conditional_acceptance(at_risk.sum(axis=0), accepted.sum(axis=0), max_tau)
    cost, batch = group_cost.model, group_cost.batch_size
    curve: list[dict[str, Any]] = speedup_curve(est.cond_alpha, cost, batch, max_tau)
    tau = best_tau(curve)
    lo_q, hi_q = 100 * (1 - CI_LEVEL) / 2, 100 * (1 + CI_LEVEL) / 2
    p_best = None
    if boots.shape[0]:
        lo, hi = np.nanpercentile(boots, [lo_q, hi_q], axis=0)
        for row in curve:
            row["ci"] = [float(lo[row["tau"]]), float(hi[row["tau"]])]
        # share of replicates whose own best tau is the recommended one (np.argmax: ties to the smaller tau); a
        # replicate without a cost fit (no timed draft in its resample) is NaN and left out, as in the percentiles
        finite = boots[np.isfinite(boots).all(axis=1)]
        p_best = float(np.mean(np.argmax(np.round(finite, 12), axis=1) == tau)) if finite.shape[0] else None
    current = min(current_tau, max_tau)
    notes = []
    if current_tau > max_tau:
        notes.append(
            f"the logged tau {current_tau} is beyond the largest tau modelled ({TAU_LIMIT}): read as {current}"
        )
    if current == 0:  # speculative steps but no configured tau > 0 logged: the longest draft seen stands in
        current = int(np.flatnonzero(est.at_risk > 0).max()) + 1 if (est.at_risk > 0).any() else 0
        notes.append(f"no configured tau logged: current tau {current} is the longest draft seen")
    # alpha as in the glossary: the i.i.d. alpha whose Eq. (1) gives the modelled MAL at the current tau
    alpha = alpha_from_mal(expected_tokens(est.cond_alpha, current), current) if current > 0 else est.alpha
    c = cost.cost_ratio(batch)
    if c >= policies.DRAFT_COST_FLAG:
        notes.append(f"the draft costs {c:.2f} of a target pass: not much cheaper than the target")
    if tau == 0:
        # the model's own verdict, not alpha <= c alone: Cor. 3.9 is exact for i.i.d. acceptance and free
        # verification only; acceptance that falls with position can put the i.i.d. alpha of the current tau below c
        # while tau 1 still pays
        cor = " (alpha <= cost_ratio: Leviathan et al. 2023 Cor. 3.9)" if alpha <= c else ""
        notes.append(f"no tau > 0 beats the target alone{cor}: switch speculation off")
    if boots.shape[0] and fit.source != "fitted":
        notes.append(
            f"the interval holds the {'measured (replay profile)' if fit.source == 'profile' else 'given'} costs "
            "fixed: it covers acceptance uncertainty only"
        )
    if not fit.identified:
        notes.append("every timed step had the same tokens x batch size: verify cost assumed flat")
    if tau > est.n_estimated:
        notes.append(
            f"tau {tau} rests on extrapolation: positions beyond {est.n_estimated} use a geometric tail "
            f"(alpha {est.tail_alpha:.3f}); confirm with a canary at that tau"
        )
    return {
        "deployment": deployment,
        "segment": segment,
        "requests": int(at_risk.shape[0]),
        "verify_steps": int(at_risk[:, 0].sum()),
        "current_tau": current,
        "recommended_tau": tau,
        "alpha": alpha,
        "alpha_by_position": [float(a) for a in est.cond_alpha],
        "estimated_positions": est.n_estimated,
        "cost_ratio": c,
        "costs": {**fit.to_dict(), "draft_ms_per_token": cost.draft_ms_per_token},
        "batch_size": batch,
        "current_speedup": curve[current]["speedup"],
        "expected_speedup": curve[tau]["speedup"],
        # None when the current speedup underflows to 0 (a --cost so large that tau * c overflows)
        "gain": None
        if curve[current]["speedup"] <= 0
        else curve[tau]["speedup"] / curve[current]["speedup"] - 1.0,
        "ci": curve[tau].get("ci"),  # None without bootstrap replicates (--boot 0)
        # what the interval resamples: "acceptance and costs" (costs refit per replicate) or "acceptance" (fixed)
        "ci_covers": None
        if not boots.shape[0]
        else "acceptance"
        if fit.source != "fitted"
        else "acceptance and costs",
        "p_best": p_best,
        "curve": curve,
        "tau_by_batch_size": _batch_table(est.cond_alpha, cost, batches, max_tau),
        "notes": notes,
        "_units": (at_risk, accepted, cost),  # for policies; dropped before output
    }


def recommend_from_store(
    con: duckdb.DuckDBPyConnection,
    by: Sequence[str] = (),
    max_tau: int = MAX_TAU,
    n_boot: int = 200,
    seed: int = 0,
    cost_ratio: float | None = None,
) -> list[dict[str, Any]]:
    """One recommendation per deployment and segment that has speculative steps (or engine windows) and costs.

    Costs come from replay's profile of the deployment's model pair, else from a least-squares fit over its timed
    steps; ``cost_ratio`` overrides both with free verification and c = cost_ratio. Deployments with neither are
    left out here (``recommend_report`` lists them under ``skipped``): every row has every key of the JSON output.
    """
    return recommend_with_skipped(con, by, max_tau, n_boot, seed, cost_ratio)[0]


def recommend_with_skipped(
    con: duckdb.DuckDBPyConnection,
    by: Sequence[str] = (),
    max_tau: int = MAX_TAU,
    n_boot: int = 200,
    seed: int = 0,
    cost_ratio: float | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(recommendations, skipped): as recommend_from_store, plus the groups left out and why (the ``skipped`` of
    ``specdiag recommend --json``)."""
    scored, skipped = _split(_recommendations(con, _check_by(by), max_tau, n_boot, seed, cost_ratio))
    return [_public(r) for r in scored], skipped


def _split(recs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(scored rows, still carrying their private units for policies; skipped rows)."""
    return [r for r in recs if "_units" in r], [r for r in recs if "_units" not in r]


def _recommendations(
    con: duckdb.DuckDBPyConnection,
    by: tuple[str, ...],
    max_tau: int,
    n_boot: int,
    seed: int,
    cost_ratio: float | None,
) -> list[dict[str, Any]]:
    if max_tau < 1:
        raise UsageError(f"--max-tau {max_tau}: must be >= 1")
    if cost_ratio is not None:
        _check_cost(cost_ratio)
    rng = np.random.default_rng(seed)
    groups = _groups(con, by)
    current = {key: g.tau for key, g in groups.items()}
    # the curve and the search reach the logged tau (up to TAU_LIMIT): the current speedup is the current tau's
    max_tau = max(max_tau, min(max(current.values(), default=0), TAU_LIMIT))
    # without --cost, a deployment known only from engine windows has no timings (and no model pair to find a
    # replay profile by): it is skipped for its costs, so its windows are counted, not loaded
    with_windows = cost_ratio is not None
    deployments, batches = _load_units(con, by, max_tau, with_windows)
    fitted: dict[str, CostFit] = {}
    for dep, units in deployments.items():
        fit = None if units.costs is None else fit_from_unit_sums(units.costs.sums, _draft_costs(units.costs))
        if fit is not None:
            fitted[dep] = fit
    fits = all_cost_fits(con, fitted)
    if cost_ratio is not None:
        given = CostModel(floor_ms=1.0, compute_ms=0.0, draft_ms_per_token=cost_ratio)
        fits = {dep: CostFit(given, "given", 0, True, 1.0) for dep in deployments}
    out = []
    for dep, units in deployments.items():
        fit = fits.get(dep)
        keys = list(units.groups)  # groups in the SQL's order (deployment, then segment columns)
        if fit is None:
            out += [
                _no_timings(dep, by, key, int(units.groups[key].at_risk.shape[0]), current) for key in keys
            ]
            continue
        costs = {}
        for key in keys:
            draft = dict(zip(by, key[1:])).get("draft_model")
            by_draft = "draft_model" in by
            model = fit.for_draft(draft) if by_draft else fit.model
            costs[key] = GroupCost(model, fit.batch_mean, draft, by_draft)
        boots = bootstrap_deployment(units, keys, costs, fit.source == "fitted", max_tau, n_boot, rng)
        for key in keys:
            out.append(
                _recommend_group(
                    dep, dict(zip(by, key[1:])), units.groups[key], fit, costs[key], boots[key],
                    current.get(key, 0), batches.get(dep, []), max_tau,
                )
            )  # fmt: skip
    covered = {key for units in deployments.values() for key in units.groups}
    if not with_windows and not by:
        for dep, windows in con.execute(_WINDOW_UNITS).fetchall():
            out.append(_no_timings(dep, by, (dep,), int(windows), current))
            covered.add((dep,))
    return out + _without_units(by, {key: g for key, g in groups.items() if key not in covered})


# the windows recommend_histogram.sql makes units of: those of deployments without request records, with counts
_WINDOW_UNITS = """
    select deployment, count(*) from windows
    where accepted_per_position is not null and verify_steps > 0
      and deployment not in (select distinct deployment from requests)
    group by deployment order by deployment
"""


def _no_timings(
    dep: str, by: tuple[str, ...], key: tuple[Any, ...], units: int, current: dict[tuple[Any, ...], int]
) -> dict[str, Any]:
    """The skipped row of a group whose deployment has no cost model."""
    return {
        "deployment": dep,
        "segment": dict(zip(by, key[1:])),
        "requests": units,
        "current_tau": current.get(key, 0),
        "reason": "no usable draft and verify timings for this deployment (none logged, or every verify time 0): "
        "pass --cost C",
    }


def _without_units(by: tuple[str, ...], groups: dict[tuple[Any, ...], _Group]) -> list[dict[str, Any]]:
    """Skipped rows for the groups (deployments, or segments with --by) with no acceptance units: speculative
    requests logged with totals only (no steps, no per-position counts), tau = 0 control traffic only, or engine
    windows without token counts. Without these rows such a group would vanish from the output without a word."""
    out = []
    for key, g in groups.items():
        if g.requests == 0:
            reason = (
                "engine windows without accepted token counts (SGLang logs print none): "
                "nothing to estimate acceptance by position from"
            )
        elif g.speculative:
            reason = (
                "request totals only: no steps or per-position counts to estimate acceptance by position from"
            )
        else:
            reason = "no speculative traffic (tau = 0 control only): nothing to estimate acceptance from"
        out.append(
            {
                "deployment": key[0],
                "segment": dict(zip(by, key[1:])),
                "requests": g.requests,
                "current_tau": g.tau,
                "reason": reason,
            }
        )
    return out


def _public(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if not k.startswith("_")}


def recommend_report(
    con: duckdb.DuckDBPyConnection,
    by: Sequence[str] = (),
    max_tau: int = MAX_TAU,
    n_boot: int = 200,
    seed: int = 0,
    cost_ratio: float | None = None,
    budget: int | None = None,
) -> dict[str, Any]:
    """Everything `specdiag recommend --json` prints: recommendations, skipped groups (no costs), dynamic policies,
    drafts and, with a budget, the allocation."""
    by = _check_by(by)
    scored, skipped = _split(_recommendations(con, by, max_tau, n_boot, seed, cost_ratio))
    report: dict[str, Any] = {"recommendations": [_public(r) for r in scored], "skipped": skipped}
    max_tau = max([max_tau] + [r["current_tau"] for r in scored])  # as the curves: up to the logged tau
    report["policies"] = policies.evaluate_policies(con, scored, max_tau, seed)
    report["drafts"] = policies.rank_drafts(report["recommendations"]) + policies.replay_drafts(con)
    if budget is not None:
        report["budget"] = policies.allocate_budgets(scored, budget, max_tau)
    return report
