"""Beyond one fixed tau: a verification budget across request classes, dynamic draft-length policies, and drafts.

All three rest on the per-position conditional acceptance of :mod:`specdiag.acceptance` (geometric tail beyond the
logged tau) and the cost model of :mod:`specdiag.speedup`. The probability that draft position k is accepted is
P(k) = prod_{i<=k} alpha_i, so a step drafting tau tokens yields 1 + sum_{k<=tau} P(k) tokens.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from typing import Any

import duckdb
import numpy as np
from threadpoolctl import ThreadpoolController

from specdiag.queries import find_query
from specdiag.speedup import CostModel

DRAFT_COST_FLAG = 0.5  # cost_ratio at or above which a "draft" is not much cheaper than the target
POLICY_UNITS = 20_000  # requests sampled for policy evaluation (per deployment and segment)
PRIOR_STEPS = 5.0  # pseudo-steps of the pooled acceptance added to each request's own counts (shrinkage)


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()  # finds the loaded BLAS libraries once per process


def one_blas_thread() -> Any:
    """Context: BLAS on one thread. The products and solves here are thin (replicates or requests x a few columns):
    one thread is fastest, and OpenBLAS's threads spin against each other on a busy machine (the request bootstrap
    ran 10x slower on the shared 2-core development machine under load)."""
    return _blas().limit(limits=1, user_api="blas")


def shrunk_acceptance(
    at_risk: np.ndarray, accepted: np.ndarray, pooled: np.ndarray, prior: float = PRIOR_STEPS
):
    """Per-request conditional acceptance (units, positions): each request's own counts shrunk towards the pooled
    estimate, (accepted + prior * pooled) / (at_risk + prior). Positions a request never tried get the pooled value
    (which beyond the logged tau is the fitted geometric tail)."""
    return (accepted + prior * pooled[None, :]) / (at_risk + prior)


def _tokens(cond: np.ndarray) -> np.ndarray:
    """(units, max_tau + 1): expected tokens per step for tau = 0..max_tau (Leviathan et al. 2023 Eq. 1 per position)."""
    return np.concatenate(
        [np.ones((cond.shape[0], 1)), 1.0 + np.cumsum(np.cumprod(cond, axis=1), axis=1)], axis=1
    )


def _step_ms(cost: CostModel, batch_size: float, max_tau: int) -> np.ndarray:
    taus = np.arange(max_tau + 1)
    return taus * cost.draft_ms_per_token + np.asarray(cost.target_ms(taus + 1, batch_size), dtype=float)


def fixed_tau_speedups(
    cond: np.ndarray, weights: np.ndarray, cost: CostModel, batch_size: float, max_tau: int
) -> np.ndarray:
    """Fleet speedup of each fixed tau: sum_r N_r t1 / sum_r N_r * step_ms(tau) / E_r(tau), N_r = tokens of request r."""
    per_token_ms = _step_ms(cost, batch_size, max_tau)[None, :] / _tokens(cond)
    t1 = float(cost.target_ms(1, batch_size))
    return weights.sum() * t1 / (weights[:, None] * per_token_ms).sum(axis=0)


def heuristic_stationary(cond: np.ndarray, max_tau: int) -> np.ndarray:
    """Stationary distribution over tau = 1..max_tau of transformers' heuristic schedule, per request.

    After a fully accepted step tau -> min(tau + 2, max_tau), otherwise tau -> max(tau - 1, 1); a step drafting tau
    is fully accepted with probability prod_{i<=tau} alpha_i. Solves pi P = pi, sum(pi) = 1 for each request.
    """
    full = np.cumprod(cond[:, :max_tau], axis=1)  # (units, S): P(all tau accepted), tau = 1..S
    units, s = full.shape
    rows = np.arange(units)[:, None]
    idx = np.arange(s)[None, :]
    trans = np.zeros((units, s, s))
    # each (request, tau) has one "up" and one "down" target, so plain fancy-index additions never collide
    trans[rows, idx, np.minimum(idx + 2, s - 1)] += full
    trans[rows, idx, np.maximum(idx - 1, 0)] += 1.0 - full
    system = np.transpose(trans, (0, 2, 1)) - np.eye(s)[None]
    system[:, -1, :] = 1.0  # replace one balance equation by sum(pi) = 1
    rhs = np.zeros((units, s, 1))
    rhs[:, -1, 0] = 1.0
    return np.clip(np.linalg.solve(system, rhs)[:, :, 0], 0.0, 1.0)


def heuristic_speedup(
    cond: np.ndarray, weights: np.ndarray, cost: CostModel, batch_size: float, max_tau: int
) -> tuple[float, float]:
    """(fleet speedup, mean tau) of the +2/-1 schedule: renewal reward, E[tokens] / E[step ms] under pi."""
    with one_blas_thread():  # many 16 x 16 solves: threads only contend
        pi = heuristic_stationary(cond, max_tau)
    tokens = (pi * _tokens(cond)[:, 1:]).sum(axis=1)
    step = (pi * _step_ms(cost, batch_size, max_tau)[None, 1:]).sum(axis=1)
    t1 = float(cost.target_ms(1, batch_size))
    speed = weights.sum() * t1 / (weights * step / tokens).sum()
    mean_tau = float((weights * (pi * np.arange(1, max_tau + 1)).sum(axis=1)).sum() / weights.sum())
    return float(speed), mean_tau


def threshold_speedups(con: duckdb.DuckDBPyConnection) -> dict[str, list[dict[str, float]]]:
    """Per deployment: counts of the confidence-threshold stop on logged steps (only steps with draft_probs)."""
    out: dict[str, list[dict[str, float]]] = defaultdict(list)
    cur = con.execute(find_query("recommend_threshold").sql)
    names = [d[0] for d in cur.description]
    for row in cur.fetchall():
        rec = dict(zip(names, row))
        out[rec.pop("deployment")].append(rec)
    return dict(out)


def _threshold_speedup(row: dict[str, float], cost: CostModel) -> float:
    """Target-only time of the emitted tokens over the speculative time of the same steps.

    speculative: sum over steps of passes * t_draft + floor + compute * (k + 1) * B, passes = min(k + 1, drafted):
    a step that stops early has run the draft pass whose low q stopped it;
    target alone: sum over emitted tokens of floor + compute * B.
    """
    spec_ms = (
        cost.draft_ms_per_token * row["draft_passes"]
        + cost.floor_ms * row["steps"]
        + cost.compute_ms * row["tokens_in_flight"]
    )
    target_ms = cost.floor_ms * (row["accepted"] + row["steps"]) + cost.compute_ms * row["emitted_in_flight"]
    return float(target_ms / spec_ms)


def evaluate_policies(
    con: duckdb.DuckDBPyConnection, recs: list[dict[str, Any]], max_tau: int, seed: int = 0
) -> list[dict[str, Any]]:
    """Rank fixed tau, the heuristic schedule and a confidence-threshold stop by expected speedup."""
    rng = np.random.default_rng(seed)
    thresholds = threshold_speedups(con)
    out = []
    for rec in recs:
        at_risk, accepted, cost = rec["_units"]
        if at_risk.shape[0] > POLICY_UNITS:
            keep = rng.choice(at_risk.shape[0], POLICY_UNITS, replace=False)
            at_risk, accepted = at_risk[keep], accepted[keep]
        cond = shrunk_acceptance(at_risk, accepted, np.asarray(rec["alpha_by_position"], dtype=float))
        weights = accepted.sum(axis=1) + at_risk[:, 0]  # tokens each request produced
        batch = rec["batch_size"]
        fixed = fixed_tau_speedups(cond, weights, cost, batch, max_tau)
        best_fixed = int(np.argmax(fixed))
        heur, mean_tau = heuristic_speedup(cond, weights, cost, batch, max_tau)
        ranking: list[dict[str, Any]] = [
            {"policy": "fixed", "tau": best_fixed, "expected_speedup": float(fixed[best_fixed])},
            {"policy": "heuristic", "mean_tau": mean_tau, "expected_speedup": heur},
        ]
        notes = [
            "fixed and heuristic: per-request acceptance (shrunk towards the pooled estimate, geometric tail beyond "
            "the logged tau), long requests (the heuristic's stationary distribution), costs held fixed",
        ]
        rows = thresholds.get(rec["deployment"], [])
        if rows:
            by_h = {round(r["threshold"], 3): _threshold_speedup(r, cost) for r in rows}
            best_h = max(by_h, key=lambda h: by_h[h])
            ranking.append(
                {
                    "policy": "confidence_threshold",
                    "threshold": best_h,
                    "expected_speedup": by_h[best_h],
                    "logged_fixed_speedup": by_h[0.0],
                }
            )
            notes.append(
                "confidence_threshold: replayed on logged steps with draft_probs of the whole deployment, capped at "
                "the logged tau; compare it with logged_fixed_speedup (the same steps at the logged tau)"
            )
        else:
            notes.append("confidence_threshold: not evaluated, the steps carry no draft_probs")
        ranking.sort(key=lambda r: -r["expected_speedup"])
        out.append(
            {"deployment": rec["deployment"], "segment": rec["segment"], "ranking": ranking, "notes": notes}
        )
    return out


def rank_drafts(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Several drafts for one target (segments that differ only in draft_model): rank by expected speedup."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for rec in recs:
        if "draft_model" not in rec["segment"]:
            continue
        rest = tuple(sorted((k, str(v)) for k, v in rec["segment"].items() if k != "draft_model"))
        groups[(rec["deployment"], rest)].append(rec)
    out = []
    for (deployment, rest), members in groups.items():
        if len(members) < 2:
            continue
        drafts = [
            {
                "draft_model": m["segment"]["draft_model"],
                "recommended_tau": m["recommended_tau"],
                "expected_speedup": m["expected_speedup"],
                "alpha": m["alpha"],
                "cost_ratio": m["cost_ratio"],
                "not_much_cheaper": m["cost_ratio"] >= DRAFT_COST_FLAG,
            }
            for m in members
        ]
        drafts.sort(key=lambda d: -d["expected_speedup"])
        out.append(
            {"deployment": deployment, "segment": dict(rest), "source": "production", "drafts": drafts}
        )
    return out


def replay_drafts(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Drafts replayed against one target, ranked by measured speedup (the best tau of each draft)."""
    cur = con.execute(find_query("recommend_replay_drafts").sql)
    names = [d[0] for d in cur.description]
    by_target: dict[Any, dict[Any, dict[str, Any]]] = defaultdict(dict)
    for row in cur.fetchall():
        rec = dict(zip(names, row))
        best = by_target[rec["target"]].get(rec["draft"])
        if rec["speedup"] is not None and (best is None or rec["speedup"] > best["expected_speedup"]):
            by_target[rec["target"]][rec["draft"]] = {
                "draft_model": rec["draft"],
                "recommended_tau": rec["tau"],
                "expected_speedup": rec["speedup"],
                "mean_acceptance_length": rec["mean_acceptance_length"],
                "cost_ratio": rec["cost_ratio"],
                "not_much_cheaper": rec["cost_ratio"] is not None and rec["cost_ratio"] >= DRAFT_COST_FLAG,
                "prompts": rec["prompts"],
            }
    return [
        {
            "target_model": target,
            "source": "replay",
            "drafts": sorted(d.values(), key=lambda r: -r["expected_speedup"]),
        }
        for target, d in by_target.items()
    ]


def allocate(
    classes: list[tuple[int, np.ndarray]], budget: int, max_tau: int
) -> tuple[list[float], float, int, float]:
    """Greedy allocation of ``budget`` verified tokens per step across sequences of several classes.

    classes: (sequences in the batch, conditional acceptance). Every sequence verifies its own target token (1 of
    the budget); each further draft position k of a class-c sequence costs one token and yields P_c(k) expected
    accepted tokens. P_c(k) falls with k, so taking the highest P first is optimal (each sequence's gains are
    decreasing, the costs are equal). Returns (mean tau per class, expected accepted, uniform tau, uniform accepted).
    """
    sequences = sum(n for n, _ in classes)
    spare = max(budget - sequences, 0)
    reach = [
        np.cumprod(np.asarray(cond, dtype=float)[:max_tau]) for _, cond in classes
    ]  # P_c(k), k = 1..max_tau
    offers = sorted(
        ((float(p[k]), c, k) for c, p in enumerate(reach) for k in range(max_tau)), key=lambda o: -o[0]
    )
    taken = [0.0] * len(classes)
    accepted = 0.0
    for gain, c, _k in offers:
        if spare <= 0:
            break
        units = min(classes[c][0], spare)
        taken[c] += units
        accepted += units * gain
        spare -= units
    uniform = min(max(budget // sequences - 1, 0), max_tau) if sequences else 0
    uniform_accepted = sum(n * float(p[:uniform].sum()) for (n, _), p in zip(classes, reach))
    return [t / n if n else 0.0 for t, (n, _) in zip(taken, classes)], accepted, uniform, uniform_accepted


def allocate_budgets(recs: list[dict[str, Any]], budget: int, max_tau: int) -> list[dict[str, Any]]:
    """Per deployment: tau per request class (segment) under a budget of verified tokens per step."""
    by_dep: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in recs:
        by_dep[rec["deployment"]].append(rec)
    out = []
    for deployment, members in by_dep.items():
        steps = np.array([m["verify_steps"] for m in members], dtype=float)
        batch = max(int(round(np.average([m["batch_size"] for m in members], weights=steps))), 1)
        counts = _largest_remainder(steps / steps.sum() * batch)
        classes = [(n, np.asarray(m["alpha_by_position"])) for n, m in zip(counts, members)]
        taus, acc, uniform, uniform_acc = allocate(classes, budget, max_tau)
        out.append(
            {
                "deployment": deployment,
                "budget": budget,
                "batch_size": batch,
                "classes": [
                    {"segment": m["segment"], "sequences": n, "tau": t}
                    for m, n, t in zip(members, counts, taus)
                ],
                "expected_accepted": acc,
                "uniform_tau": uniform,
                "uniform_expected_accepted": uniform_acc,
                "gain": acc / uniform_acc - 1.0 if uniform_acc > 0 else None,
            }
        )
    return out


def _largest_remainder(shares: np.ndarray) -> list[int]:
    """Round shares to integers with the same (rounded) total, each class at least one sequence when possible."""
    total = int(round(shares.sum()))
    base = np.floor(shares).astype(int)
    if total >= shares.size:  # room for every class: none is left out (it would read as "tau 0" for it)
        base = np.maximum(base, 1)
        while base.sum() > total:  # take back from the class most above its share, among those above one
            over = np.where(base > 1, base - shares, -np.inf)
            base[int(np.argmax(over))] -= 1
    order = np.argsort(-(shares - base))
    for i in order[: max(total - base.sum(), 0)]:
        base[i] += 1
    return [int(b) for b in base]
