"""Acceptance per deployment and source: trace requests and engine records beside engine metric windows.

Definitions (docs/glossary.md): verify_steps = steps with drafted > 0; acceptance_rate = accepted / drafted;
mean_acceptance_length (MAL) = 1 + accepted / verify_steps (tokens per verify step, the target's own token
included); alpha = the i.i.d. per-token acceptance that gives this MAL at the group's tau (Leviathan et al. 2023
Eq. 1, inverted by :func:`specdiag.speedup.alpha_from_mal`), null when the group's tau is unknown or mixed.

Engine windows that print only a MAL (SGLang ``accept len``) have no drafted/accepted counts: their MAL enters the
group's MAL weighted by the window's verify_steps when known, else by its running requests, else 1. Where every
window has counts this weighted mean equals 1 + sum(accepted) / sum(verify_steps) exactly.
"""

from __future__ import annotations

import math
from typing import Any

import duckdb

from specdiag.errors import UsageError
from specdiag.speedup import alpha_from_mal

# --by columns -> (expression on requests r, expression on windows w); windows lack most request attributes
BY_COLUMNS: dict[str, tuple[str, str]] = {
    "task": ("r.task", "null::varchar"),
    "tau": ("r.tau", "w.tau"),
    "target_model": ("r.target_model", "null::varchar"),
    "draft_model": ("r.draft_model", "null::varchar"),
    "temperature": ("r.temperature", "null::double"),
    "top_p": ("r.top_p", "null::double"),
    "acceptance": ("r.acceptance", "null::varchar"),
    "engine": ("null::varchar", "w.engine"),
}
KEYS = (
    "deployment",
    "source",
    "requests",
    "windows",
    "verify_steps",
    "drafted",
    "accepted",
    "acceptance_rate",
    "mean_acceptance_length",
    "alpha",
)


def check_by(by: list[str] | tuple[str, ...]) -> list[str]:
    """Segment columns from --by, checked against the allow-list (deployment and source are always grouped)."""
    columns = [c for c in dict.fromkeys(by) if c not in ("deployment", "source")]
    unknown = [c for c in columns if c not in BY_COLUMNS]
    if unknown:
        raise UsageError(
            f"--by: unknown column {unknown[0]!r}", hint=f"choose from deployment, {', '.join(BY_COLUMNS)}"
        )
    return columns


def _sql(by: list[str]) -> str:
    # identifiers come only from BY_COLUMNS (checked above); no value is ever formatted into this text
    r_by = "".join(f", {BY_COLUMNS[c][0]} as {c}" for c in by)
    w_by = "".join(f", {BY_COLUMNS[c][1]} as {c}" for c in by)
    group = "".join(f", {c}" for c in by)
    return f"""
with step_totals as (
    select request_id, count(*) filter (where drafted > 0) as verify_steps,
           sum(drafted) as drafted, sum(accepted) as accepted
    from steps group by request_id
),
request_rows as (
    select r.deployment, r.source{r_by}, r.tau,
           coalesce(s.verify_steps, r.verify_steps) as verify_steps,
           coalesce(s.drafted, r.drafted) as drafted,
           coalesce(s.accepted, r.accepted) as accepted
    from requests as r left join step_totals as s on s.request_id = r.request_id
),
request_groups as (
    select deployment, source{group},
           count(*) as requests, 0 as windows,
           sum(verify_steps)::double as verify_steps,
           sum(drafted) as drafted, sum(accepted) as accepted,
           sum(accepted) filter (where drafted is not null)
             / nullif(sum(drafted) filter (where accepted is not null), 0) as acceptance_rate,
           1 + sum(accepted) filter (where verify_steps is not null)
             / nullif(sum(verify_steps) filter (where accepted is not null), 0) as mean_acceptance_length,
           list(distinct tau) filter (where verify_steps > 0 and tau is not null) as taus,
           count(*) filter (where verify_steps > 0 and tau is null) as unknown_tau
    from request_rows group by all
),
window_rows as (
    select w.deployment, w.source{w_by}, w.tau, w.verify_steps, w.drafted, w.accepted,
           coalesce(1 + w.accepted / nullif(w.verify_steps, 0), w.mean_acceptance_length) as mal,
           coalesce(w.verify_steps, w.running_requests, 1) as weight
    from windows as w
),
window_groups as (
    select deployment, source{group},
           0 as requests, count(*) as windows,
           sum(verify_steps)::double as verify_steps,
           sum(drafted) as drafted, sum(accepted) as accepted,
           sum(accepted) filter (where drafted is not null)
             / nullif(sum(drafted) filter (where accepted is not null), 0) as acceptance_rate,
           sum(mal * weight) filter (where mal is not null)
             / nullif(sum(weight) filter (where mal is not null), 0) as mean_acceptance_length,
           list(distinct tau) filter (where tau is not null) as taus,
           count(*) filter (where tau is null) as unknown_tau
    from window_rows group by all
)
select * from request_groups
union all by name
select * from window_groups
order by deployment, source{group}
"""


def summarize(con: duckdb.DuckDBPyConnection, by: list[str] | tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """One dict per (deployment, source, *by) with the keys in KEYS followed by the --by columns."""
    columns = check_by(by)
    cursor = con.execute(_sql(columns))
    names = [d[0] for d in cursor.description or []]
    rows = []
    for values in cursor.fetchall():
        raw = dict(zip(names, values, strict=True))
        mal = raw["mean_acceptance_length"]
        taus = [t for t in raw["taus"] or [] if t]  # tau = 0 never has verify steps
        tau = taus[0] if len(taus) == 1 and raw["unknown_tau"] == 0 else None
        alpha = alpha_from_mal(mal, tau) if tau is not None and mal is not None else None
        row = {
            "deployment": raw["deployment"],
            "source": raw["source"],
            "requests": raw["requests"],
            "windows": raw["windows"],
            "verify_steps": _count(raw["verify_steps"]),
            "drafted": raw["drafted"],
            "accepted": raw["accepted"],
            "acceptance_rate": raw["acceptance_rate"],
            "mean_acceptance_length": mal,
            "alpha": alpha if alpha is None or math.isfinite(alpha) else None,
        }
        row.update({c: raw[c] for c in columns})
        rows.append(row)
    return rows


def _count(value: float | None) -> int | float | None:
    """verify_steps is a whole number except where an engine's count was derived from a rounded MAL."""
    if value is None:
        return None
    return int(value) if float(value).is_integer() else float(value)
