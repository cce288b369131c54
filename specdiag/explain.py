"""Explain one request: where its time went, what bottleneck it hit, and what it would have cost otherwise.

Units: milliseconds for times, tokens for lengths, probabilities in [0, 1]. A verify step emits accepted + 1 tokens
(the accepted draft prefix and one token of the target's own). The request's alpha is the i.i.d. per-token
acceptance solved from its mean acceptance length (Leviathan et al. 2023, arXiv 2211.17192, Eq. 1), and the what-if
costs use the deployment's cost model t_verify(n, B) = floor_ms + compute_ms * n * B fitted by
:mod:`specdiag.costs`: decode ms at tau = tokens x step_ms(tau, B) / E[tokens per step](alpha, tau).
"""

from __future__ import annotations

import statistics
from typing import Any

import duckdb

from specdiag.costs import CostFit, fit_costs
from specdiag.errors import InputError, UsageError
from specdiag.speedup import MAX_TAU, CostModel, alpha_from_mal, expected_tokens_iid

# Verdicts, checked in this order; the first that applies is the verdict, the others are listed under `also`.
# Names are the finding kinds of specdiag.findings.KINDS where one fits, plus three of explain's own.
VERDICTS: dict[str, str] = {
    "overhead_outside_decode": "most of the latency is outside the decode loop (prefill, queueing, network)",
    "low_acceptance": "the draft's tokens are rarely accepted for this request",
    "draft_bottleneck": "drafting takes too large a share of each step",
    "verify_bound": "verifying tau + 1 tokens at this batch size costs much more than one target token",
    "tau_too_high": "a smaller tau would have been materially faster for this request's acceptance",
    "tau_too_low": "a larger tau would have been materially faster for this request's acceptance",
    "speculation_harmful": "per-token decode time is no better than the deployment's tau = 0 control traffic",
    "no_bottleneck": "speculation works as expected for this request",
}
OVERHEAD_SHARE = 0.5  # of latency_ms outside the verify steps
LOW_ALPHA = 0.3  # per-token acceptance probability
DRAFT_SHARE = 0.4  # of the step time (draft_ms + verify_ms)
VERIFY_GROWTH = (
    2.0  # t_target(tau + 1, B) / t_target(1, B): verifying costs this many single-token passes or more
)
MATERIAL_GAIN = 1.10  # a tau whose predicted speedup is 10% higher is "materially" better
HEAD, TAIL, MIDDLE_ROWS = (
    4,
    3,
    6,
)  # step table: first and last steps shown one by one, middle in at most 6 rows
MAX_REJECTED = 50  # rejected tokens listed


def _fetch(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def explain_request(
    con: duckdb.DuckDBPyConnection, request_id: str, fits: dict[str, CostFit | None] | None = None
) -> dict[str, Any]:
    """Everything `specdiag explain` shows for one request, as plain data (the --json output).

    fits: a cache of cost fits per deployment, shared across calls (``--worst N`` fits each deployment once).
    """
    found = _fetch(
        con,
        "select request_id, source, ts, deployment, task, target_model, draft_model, tau, temperature,"
        " latency_ms, ttft_ms, batch_size, prompt_tokens, output_tokens from requests where request_id = ?",
        [request_id],
    )
    if not found:
        raise InputError(
            f"no request {request_id!r} in the store", hint="specdiag sql 'select request_id from requests'"
        )
    request = found[0]
    steps = _fetch(
        con,
        "select step, drafted, accepted, draft_ms, verify_ms, batch_size, draft_token_ids, draft_probs, target_probs"
        " from steps where request_id = ? order by step",
        [request_id],
    )
    if not steps:
        raise InputError(
            f"request {request_id!r} has no steps: nothing to explain",
            hint="explain needs per-step traces (trace format v1 `steps`)",
        )
    batch = _batch_size(steps, request["batch_size"])
    totals = _totals(steps, request["latency_ms"])
    tau = request["tau"] if request["tau"] is not None else max(s["drafted"] for s in steps)
    alpha = alpha_from_mal(totals["mean_acceptance_length"], tau) if totals["verify_steps"] else None
    fits = {} if fits is None else fits
    if request["deployment"] not in fits:
        fits[request["deployment"]] = fit_costs(con, request["deployment"])
    fit = fits[request["deployment"]]
    # a fit whose target pass costs nothing (all verify_ms logged as 0) cannot price anything
    cost = fit.model if fit is not None and float(fit.model.target_ms(1, batch)) > 0 else None
    control = _control(con, request["deployment"], batch)
    totals["observed_speedup"] = (
        control["ms_per_token"] / totals["decode_ms_per_token"]
        if control["ms_per_token"] and totals["decode_ms_per_token"]
        else None
    )
    what_if = _what_if(totals, tau, alpha, cost, batch)
    verdicts = _verdicts(totals, tau, alpha, cost, batch, control, what_if)
    return {
        "request": {**request, "tau": tau, "batch_size": batch},
        "totals": totals,
        "alpha": alpha,
        "control": control,
        "cost_model": None if fit is None else fit.to_dict(),
        "verdict": verdicts[0],
        "also": verdicts[1:],
        "what_if": what_if,
        "step_table": compress_steps(steps),
        "rejected_tokens": _rejected_tokens(con, request_id, steps),
    }


def worst_requests(con: duckdb.DuckDBPyConnection, deployment: str, n: int) -> list[str]:
    """The n slowest requests with steps of a deployment, by latency_ms (decode time where latency is missing)."""
    if n < 1:
        raise UsageError("--worst must be at least 1")
    rows = con.execute(
        "select r.request_id from requests as r"
        " inner join (select request_id, sum(coalesce(draft_ms, 0) + coalesce(verify_ms, 0)) as step_ms"
        "             from steps group by request_id) as s on s.request_id = r.request_id"
        " where r.deployment = ? order by coalesce(r.latency_ms, s.step_ms) desc nulls last, r.request_id limit ?",
        [deployment, n],
    ).fetchall()
    if not rows:
        raise InputError(f"no requests with steps for deployment {deployment!r}")
    return [r[0] for r in rows]


def _batch_size(steps: list[dict[str, Any]], fallback: int | None) -> float:
    sizes = [s["batch_size"] for s in steps if s["batch_size"] is not None]
    return float(statistics.median(sizes)) if sizes else float(fallback or 1)


def _totals(steps: list[dict[str, Any]], latency_ms: float | None) -> dict[str, Any]:
    drafted = sum(s["drafted"] for s in steps)
    accepted = sum(s["accepted"] for s in steps)
    verify_steps = sum(1 for s in steps if s["drafted"] > 0)
    emitted = sum(s["accepted"] + 1 for s in steps)  # tokens out of the decode loop
    timed = any(s["verify_ms"] is not None for s in steps)
    draft_ms = sum(s["draft_ms"] or 0.0 for s in steps)
    verify_ms = sum(s["verify_ms"] or 0.0 for s in steps)
    step_ms = draft_ms + verify_ms if timed else None
    total_ms = latency_ms if latency_ms is not None else step_ms
    outside_ms = None if latency_ms is None or step_ms is None else max(latency_ms - step_ms, 0.0)
    share = lambda part: None if part is None or not total_ms else part / total_ms  # noqa: E731
    return {
        "steps": len(steps),
        "verify_steps": verify_steps,
        "drafted": drafted,
        "accepted": accepted,
        "emitted_tokens": emitted,
        "tokens_per_step": emitted / len(steps),
        "acceptance_rate": accepted / drafted if drafted else None,
        "mean_acceptance_length": 1 + accepted / verify_steps if verify_steps else None,
        "latency_ms": latency_ms,
        "draft_ms": draft_ms if timed else None,
        "verify_ms": verify_ms if timed else None,
        "outside_ms": outside_ms,
        "draft_share": share(draft_ms if timed else None),
        "verify_share": share(verify_ms if timed else None),
        "outside_share": share(outside_ms),
        # decode cost per token: the step time spread over the tokens the steps emitted
        "decode_ms_per_token": step_ms / emitted if step_ms is not None else None,
        "ms_per_token": total_ms / emitted if total_ms is not None else None,
    }


def _control(con: duckdb.DuckDBPyConnection, deployment: str, batch: float) -> dict[str, Any]:
    """Decode ms per token of the deployment's tau = 0 traffic at a similar batch size (B/2 .. 2B), else at any."""
    sql = (
        "select count(*) as steps, count(distinct s.request_id) as requests,"
        " sum(coalesce(s.draft_ms, 0) + s.verify_ms) / sum(s.accepted + 1) as ms_per_token,"
        " min(coalesce(s.batch_size, r.batch_size)) as batch_min, max(coalesce(s.batch_size, r.batch_size)) as batch_max"
        " from steps as s inner join requests as r on r.request_id = s.request_id"
        " where r.deployment = ? and r.tau = 0 and s.verify_ms is not null"
        " and (? or coalesce(s.batch_size, r.batch_size) between ? and ?)"
    )
    for any_batch in (False, True):
        (row,) = _fetch(con, sql, [deployment, any_batch, batch / 2, batch * 2])
        if row["steps"]:
            return {**row, "batch_matched": not any_batch}
    return {
        "steps": 0,
        "requests": 0,
        "ms_per_token": None,
        "batch_min": None,
        "batch_max": None,
        "batch_matched": False,
    }


def _decode_ms(tokens: int, tau: int, alpha: float, cost: CostModel, batch: float) -> float:
    """Predicted decode time for `tokens` tokens: steps needed x time per step (tau = 0: one target pass a token)."""
    if tau == 0:
        return tokens * float(cost.target_ms(1, batch))
    return tokens / expected_tokens_iid(alpha, tau) * cost.step_ms(tau, batch)


def _what_if(
    totals: dict[str, Any], tau: int, alpha: float | None, cost: CostModel | None, batch: float
) -> dict[str, Any] | None:
    """Modelled cost of this request at its own tau, at the best tau for its alpha, and with speculation off."""
    if alpha is None or cost is None or tau == 0:
        return None
    tokens = totals["emitted_tokens"]
    outside = totals["outside_ms"]
    off = _decode_ms(tokens, 0, alpha, cost, batch)
    curve = {t: _decode_ms(tokens, t, alpha, cost, batch) for t in range(MAX_TAU + 1)}
    best = min(curve, key=lambda t: (round(curve[t], 9), t))

    def scenario(t: int) -> dict[str, Any]:
        # latency = observed time outside the decode loop (unchanged) + modelled decode time; null when unknown
        latency = None if outside is None else outside + curve[t]
        return {"tau": t, "decode_ms": curve[t], "latency_ms": latency, "speedup": off / curve[t]}

    return {"current": scenario(tau), "recommended": scenario(best), "speculation_off": scenario(0)}


def _verdicts(
    totals: dict[str, Any],
    tau: int,
    alpha: float | None,
    cost: CostModel | None,
    batch: float,
    control: dict[str, Any],
    what_if: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def add(kind: str, summary: str, **evidence: Any) -> None:
        found.append({"kind": kind, "meaning": VERDICTS[kind], "summary": summary, "evidence": evidence})

    if totals["outside_share"] is not None and totals["outside_share"] >= OVERHEAD_SHARE:
        add(
            "overhead_outside_decode",
            f"{totals['outside_share']:.0%} of {totals['latency_ms']:.0f} ms is outside the decode steps",
            outside_ms=totals["outside_ms"],
            latency_ms=totals["latency_ms"],
            threshold=OVERHEAD_SHARE,
        )
    if tau > 0 and alpha is not None and alpha < LOW_ALPHA:
        add(
            "low_acceptance",
            f"alpha {alpha:.2f} (acceptance rate {totals['acceptance_rate']:.2f},"
            f" {totals['mean_acceptance_length']:.2f} tokens per verify step at tau {tau})",
            alpha=alpha,
            acceptance_rate=totals["acceptance_rate"],
            mean_acceptance_length=totals["mean_acceptance_length"],
            threshold=LOW_ALPHA,
        )
    step_ms = (totals["draft_ms"] or 0.0) + (totals["verify_ms"] or 0.0)
    if tau > 0 and step_ms > 0 and (totals["draft_ms"] or 0.0) / step_ms >= DRAFT_SHARE:
        add(
            "draft_bottleneck",
            f"drafting is {totals['draft_ms'] / step_ms:.0%} of step time"
            + (f" (cost ratio c = {cost.cost_ratio(batch):.2f})" if cost else ""),
            draft_share_of_steps=totals["draft_ms"] / step_ms,
            cost_ratio=cost.cost_ratio(batch) if cost else None,
            threshold=DRAFT_SHARE,
        )
    if tau > 0 and cost is not None:
        growth = float(cost.target_ms(tau + 1, batch)) / float(cost.target_ms(1, batch))
        if growth >= VERIFY_GROWTH:
            add(
                "verify_bound",
                f"verifying {tau + 1} tokens at batch {batch:g} costs {growth:.1f}x one target token"
                f" (floor {cost.floor_ms:.2f} ms + {cost.compute_ms:.4f} ms x n x B)",
                verify_growth=growth,
                batch_size=batch,
                floor_ms=cost.floor_ms,
                compute_ms=cost.compute_ms,
                threshold=VERIFY_GROWTH,
            )
    if what_if is not None:
        now, best = what_if["current"], what_if["recommended"]
        if best["speedup"] >= MATERIAL_GAIN * now["speedup"] and best["tau"] != tau:
            kind = "tau_too_high" if best["tau"] < tau else "tau_too_low"
            add(
                kind,
                f"tau {best['tau']} would give {best['speedup']:.2f}x instead of {now['speedup']:.2f}x"
                f" at alpha {alpha:.2f}",
                tau=tau,
                recommended_tau=best["tau"],
                speedup=now["speedup"],
                recommended_speedup=best["speedup"],
                threshold=MATERIAL_GAIN,
            )
    if tau > 0 and totals["observed_speedup"] is not None and totals["observed_speedup"] <= 1.0:
        add(
            "speculation_harmful",
            f"{totals['decode_ms_per_token']:.2f} ms per token vs {control['ms_per_token']:.2f} ms for tau = 0",
            decode_ms_per_token=totals["decode_ms_per_token"],
            control_ms_per_token=control["ms_per_token"],
            observed_speedup=totals["observed_speedup"],
        )
    if not found:
        summary = "control traffic (tau = 0)" if tau == 0 else "no bottleneck found"
        if totals["observed_speedup"] is not None and tau > 0:
            summary += f": {totals['observed_speedup']:.2f}x faster per token than tau = 0"
        add("no_bottleneck", summary, observed_speedup=totals["observed_speedup"])
    return found


def compress_steps(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The step table: the first HEAD and last TAIL steps one by one; the middle as runs of identical (drafted,
    accepted), or when there are too many runs, as MIDDLE_ROWS equal blocks (means per step)."""
    if len(steps) <= HEAD + TAIL + MIDDLE_ROWS:
        return [_row(steps[i : i + 1]) for i in range(len(steps))]
    middle = steps[HEAD : len(steps) - TAIL]
    runs: list[list[dict[str, Any]]] = []
    for s in middle:
        if runs and (runs[-1][0]["drafted"], runs[-1][0]["accepted"]) == (s["drafted"], s["accepted"]):
            runs[-1].append(s)
        else:
            runs.append([s])
    if len(runs) > MIDDLE_ROWS:
        size = -(-len(middle) // MIDDLE_ROWS)
        runs = [middle[i : i + size] for i in range(0, len(middle), size)]
    head = [_row([s]) for s in steps[:HEAD]]
    tail = [_row([s]) for s in steps[len(steps) - TAIL :]]
    return head + [_row(run) for run in runs] + tail


def _row(group: list[dict[str, Any]]) -> dict[str, Any]:
    """One table row: a step, or the per-step means of a run of steps."""
    n = len(group)

    def mean(key: str) -> float | None:
        values = [s[key] for s in group if s[key] is not None]
        return sum(values) / len(values) if values else None

    return {
        "first_step": group[0]["step"],
        "last_step": group[-1]["step"],
        "count": n,
        "drafted": mean("drafted"),
        "accepted": mean("accepted"),
        "emitted": sum(s["accepted"] + 1 for s in group) / n,
        "draft_ms": mean("draft_ms"),
        "verify_ms": mean("verify_ms"),
        "batch_size": mean("batch_size"),
    }


def _rejected_tokens(
    con: duckdb.DuckDBPyConnection, request_id: str, steps: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The first rejected draft token of each step (position = accepted, 0-based), with q (draft) and p (target).

    From the trace's token detail when logged, else from replays of this request (replay_tokens, accepted = false).
    """
    out = []
    for s in steps:
        pos = s["accepted"]
        if pos >= s["drafted"] or not (s["draft_probs"] or s["target_probs"] or s["draft_token_ids"]):
            continue
        out.append(
            {
                "source": "trace",
                "step": s["step"],
                "position": pos,
                "token_id": _at(s["draft_token_ids"], pos),
                "token_text": None,
                "q": _at(s["draft_probs"], pos),
                "p": _at(s["target_probs"], pos),
            }
        )
    if not out:
        out = _fetch(
            con,
            "select 'replay:' || t.run_id as source, t.step, t.position, t.token_id, t.token_text, t.q, t.p"
            " from replay_tokens as t inner join replay_runs as r on r.run_id = t.run_id and r.prompt_id = t.prompt_id"
            " where r.request_id = ? and not t.accepted"
            # only the first rejection of a step was verified and rejected; the drafts after it were discarded
            " qualify row_number() over (partition by t.run_id, t.prompt_id, t.step order by t.position) = 1"
            " order by r.created_at, t.run_id, t.step, t.position limit ?",
            [request_id, MAX_REJECTED],
        )
    return out[:MAX_REJECTED]


def _at(values: list[Any] | None, i: int) -> Any:
    return values[i] if values is not None and i < len(values) else None
