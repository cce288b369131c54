"""Recommend tau: analytically from (alpha, c), or per deployment and segment from the store.

Speedup of tau over the target alone (see :mod:`specdiag.speedup`):

    speedup(tau) = E[tokens | tau] * t_target(1, B) / (tau * t_draft + t_target(tau + 1, B))

with E[tokens | tau] = 1 + sum_{k<=tau} prod_{i<=k} alpha_i from the censored per-position estimate
(:mod:`specdiag.acceptance`) and t from the fitted or profiled cost model (:mod:`specdiag.costs`). Both times are
linear in B, so the speedup of a mix of batch sizes equals the speedup at the step-weighted mean batch size.

Confidence intervals resample requests (the unit whose steps are correlated): each bootstrap replicate reweights
the per-request position counts with multinomial counts and recomputes the estimator and the whole curve. The cost
model is held fixed: the intervals cover acceptance uncertainty only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np

from specdiag import policies
from specdiag.acceptance import conditional_acceptance, counts_by_unit, hazard_matrix
from specdiag.costs import CostFit, all_cost_fits
from specdiag.errors import UsageError
from specdiag.queries import find_query
from specdiag.speedup import MAX_TAU, CostModel, alpha_from_mal, best_tau, expected_tokens, speedup_curve

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
    if cost_ratio < 0.0 or not np.isfinite(cost_ratio):
        raise UsageError(f"--cost {cost_ratio}: must be a finite number >= 0")
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


def _check_by(by: Sequence[str]) -> tuple[str, ...]:
    for col in by:
        if col not in SEGMENT_COLUMNS:
            raise UsageError(
                f"--by {col}: not a segment column", hint=f"choose from {', '.join(SEGMENT_COLUMNS)}"
            )
    return tuple(dict.fromkeys(by))


def _unit_counts(
    con: duckdb.DuckDBPyConnection, by: tuple[str, ...], max_pos: int
) -> dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]]:
    """(deployment, *segment) -> (at_risk, accepted), each (units, max_pos): position counts per request.

    DuckDB reduces the steps to an acceptance histogram per request (``queries/recommend_positions.sql``) in a
    temporary table; only integer columns cross into numpy (no per-row strings), the segment keys come back once
    per group, and numpy expands the histogram into per-position counts.
    """
    query = find_query("recommend_positions")
    keys = ["u.deployment", *(f"r.{c}" for c in by)]  # c is from SEGMENT_COLUMNS
    names = ["deployment", *by]
    join = "join requests as r on r.rowid = u.unit_key" if by else ""
    con.execute(
        f"""
        create or replace temp table recommend_units as
        with u as ({query.sql})
        select dense_rank() over (order by {", ".join(keys)}) - 1 as grp,
               {", ".join(f"{k} as {n}" for k, n in zip(keys, names))},
               u.unit_key, u.drafted, u.accepted, u.steps
        from u {join}
        """
    )
    try:
        groups = con.execute(
            f"select distinct grp, {', '.join(names)} from recommend_units order by grp"
        ).fetchall()
        cols = con.execute(
            "select grp, unit_key, drafted, accepted, steps from recommend_units order by grp"
        ).fetchnumpy()
    finally:
        con.execute("drop table if exists recommend_units")
    out: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = {}
    grp = np.asarray(cols["grp"], dtype=np.int64)
    starts = np.searchsorted(grp, np.arange(len(groups)), side="left")
    ends = np.searchsorted(grp, np.arange(len(groups)), side="right")
    for (_, *key), lo, hi in zip(groups, starts, ends):
        _, unit = np.unique(np.asarray(cols["unit_key"][lo:hi], dtype=np.int64), return_inverse=True)
        out[tuple(key)] = counts_by_unit(
            unit,
            np.asarray(cols["drafted"][lo:hi], dtype=np.int64),
            np.asarray(cols["accepted"][lo:hi], dtype=np.int64),
            np.asarray(cols["steps"][lo:hi], dtype=float),
            int(unit.max()) + 1,
            max_pos,
        )
    return out


def _current_tau(con: duckdb.DuckDBPyConnection, by: tuple[str, ...]) -> dict[tuple[Any, ...], int]:
    """Most common configured tau > 0 per (deployment, *segment); 0 when only control traffic was logged."""
    keys = ", ".join(["deployment", *by])  # allow-listed identifiers
    sql = f"select {keys}, coalesce(mode(tau) filter (where tau > 0), 0) from requests group by all"
    out = {tuple(row[:-1]): int(row[-1]) for row in con.execute(sql).fetchall()}
    if not by:
        sql = "select deployment, coalesce(mode(tau) filter (where tau > 0), 0) from windows group by all"
        for dep, tau in con.execute(sql).fetchall():
            out.setdefault((dep,), int(tau))
    return out


def _batch_sizes(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[int, int]]]:
    out: dict[str, list[tuple[int, int]]] = {}
    for dep, batch, steps in con.execute(find_query("recommend_batches").sql).fetchall():
        out.setdefault(dep, []).append((int(batch), int(steps)))
    return out


def curve_speedups(cond: np.ndarray, cost: CostModel, batch_size: float, max_tau: int) -> np.ndarray:
    """Vectorised speedup curve: cond (n, >= max_tau) conditional acceptance -> (n, max_tau + 1) speedups."""
    cond = np.atleast_2d(cond)[:, :max_tau]
    tokens = np.concatenate(
        [np.ones((cond.shape[0], 1)), 1.0 + np.cumsum(np.cumprod(cond, axis=1), axis=1)], axis=1
    )
    taus = np.arange(max_tau + 1)
    step_ms = taus * cost.draft_ms_per_token + cost.target_ms(taus + 1, batch_size)
    return tokens * float(cost.target_ms(1, batch_size)) / step_ms


def bootstrap_curves(
    at_risk: np.ndarray,
    accepted: np.ndarray,
    cost: CostModel,
    batch_size: float,
    max_tau: int,
    n_boot: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """(n_boot, max_tau + 1) speedup curves from requests resampled with replacement (multinomial weights)."""
    units = at_risk.shape[0]
    chunk = max(1, min(BOOT_CHUNK, BOOT_CELLS // max(units, 1)))
    curves = []
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        weights = rng.multinomial(units, np.full(units, 1.0 / units), size=size).astype(float)
        cond, _, _ = hazard_matrix(weights @ at_risk, weights @ accepted, max_tau)
        curves.append(curve_speedups(cond, cost, batch_size, max_tau))
    return np.concatenate(curves) if curves else np.empty((0, max_tau + 1))


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
    at_risk: np.ndarray,
    accepted: np.ndarray,
    fit: CostFit,
    current_tau: int,
    batches: list[tuple[int, int]],
    max_tau: int,
    n_boot: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    est = conditional_acceptance(at_risk.sum(axis=0), accepted.sum(axis=0), max_tau)
    cost = fit.for_draft(segment.get("draft_model")) if "draft_model" in segment else fit.model
    batch = fit.batch_mean
    curve: list[dict[str, Any]] = speedup_curve(est.cond_alpha, cost, batch, max_tau)
    tau = best_tau(curve)
    boots = bootstrap_curves(at_risk, accepted, cost, batch, max_tau, n_boot, rng)
    lo_q, hi_q = 100 * (1 - CI_LEVEL) / 2, 100 * (1 + CI_LEVEL) / 2
    p_best = None
    if boots.shape[0]:
        lo, hi = np.nanpercentile(boots, [lo_q, hi_q], axis=0)
        for row in curve:
            row["ci"] = [float(lo[row["tau"]]), float(hi[row["tau"]])]
        # share of replicates whose own best tau is the recommended one (np.argmax: ties to the smaller tau)
        p_best = float(np.mean(np.argmax(np.round(boots, 12), axis=1) == tau))
    current = min(current_tau, max_tau)
    notes = []
    if current == 0:  # speculative steps but no configured tau > 0 logged: the longest draft seen stands in
        current = int(np.flatnonzero(est.at_risk > 0).max()) + 1 if (est.at_risk > 0).any() else 0
        notes.append(f"no configured tau logged: current tau {current} is the longest draft seen")
    # alpha as in the glossary: the i.i.d. alpha whose Eq. (1) gives the modelled MAL at the current tau
    alpha = alpha_from_mal(expected_tokens(est.cond_alpha, current), current) if current > 0 else est.alpha
    c = cost.cost_ratio(batch)
    if c >= policies.DRAFT_COST_FLAG:
        notes.append(f"the draft costs {c:.2f} of a target pass: not much cheaper than the target")
    if alpha <= c:
        notes.append("alpha <= cost_ratio: speculation cannot help (Leviathan et al. 2023 Cor. 3.9)")
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
        "gain": curve[tau]["speedup"] / curve[current]["speedup"] - 1.0,
        "ci": curve[tau].get("ci"),  # None without bootstrap replicates (--boot 0)
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
    recs = _recommendations(con, _check_by(by), max_tau, n_boot, seed, cost_ratio)
    return [_public(r) for r in recs if "_units" in r]


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
    rng = np.random.default_rng(seed)
    units = _unit_counts(con, by, max_tau)
    fits = all_cost_fits(con)
    if cost_ratio is not None:
        given = CostModel(floor_ms=1.0, compute_ms=0.0, draft_ms_per_token=cost_ratio)
        fits = {dep: CostFit(given, "given", 0, True, 1.0) for dep in {k[0] for k in units}}
    current = _current_tau(con, by)
    batches = _batch_sizes(con)
    out = []
    for key, (at_risk, accepted) in units.items():
        deployment, segment = key[0], dict(zip(by, key[1:]))
        fit = fits.get(deployment)
        if fit is None:
            out.append(
                {
                    "deployment": deployment,
                    "segment": segment,
                    "requests": int(at_risk.shape[0]),
                    "current_tau": current.get(key, 0),
                    "reason": "no draft and verify timings for this deployment: pass --cost C",
                }
            )
            continue
        out.append(
            _recommend_group(
                deployment, segment, at_risk, accepted, fit, current.get(key, 0), batches.get(deployment, []),
                max_tau, n_boot, rng,
            )
        )  # fmt: skip
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
    recs = _recommendations(con, by, max_tau, n_boot, seed, cost_ratio)
    scored = [r for r in recs if "_units" in r]
    report: dict[str, Any] = {
        "recommendations": [_public(r) for r in scored],
        "skipped": [r for r in recs if "_units" not in r],
    }
    report["policies"] = policies.evaluate_policies(con, scored, max_tau, seed)
    report["drafts"] = policies.rank_drafts(report["recommendations"]) + policies.replay_drafts(con)
    if budget is not None:
        report["budget"] = policies.allocate_budgets(scored, budget, max_tau)
    return report
