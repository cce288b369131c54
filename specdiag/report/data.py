"""The queries that feed the report: each returns plain rows (lists of dicts) ready for a chart or a table.

Every value comes from the store through bound parameters; nothing here formats a value into SQL text. Times are
UTC ``TIMESTAMP``; rates are fractions in [0, 1]; times are milliseconds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
from scipy.stats import binomtest

Row = dict[str, Any]

# Time buckets tried from finest to coarsest (seconds); the first that keeps a chart under MAX_BUCKETS points wins.
BUCKETS_S = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
MAX_BUCKETS = 300
MIN_REQUESTS = 20  # average requests (or engine windows) per deployment and bucket
MAX_POSITIONS = 16  # per-position acceptance is shown for draft positions 1..16
# Wide stores: the charts draw the MAX_DEPLOYMENTS busiest deployments one by one and pool the rest into one series;
# the acceptance chart carries at most MAX_MARKERS markers; the findings table lists the MAX_FINDINGS most severe.
# The page says what was pooled or left out (see ChartScope and the report's "notes").
MAX_DEPLOYMENTS = 10
MAX_MARKERS = 40
MAX_FINDINGS = 200

# Engine windows the charts read: those of deployments without speculative request records (those are read from
# their requests), from one source per deployment (the one with the most windows), as diagnose reads them
# (queries/diagnose_windows.sql), as a temporary view each chart query (re)creates first: a deployment logged twice (its trace and its scrapes, or a vLLM log and its
# scrapes) would otherwise count every verify step twice.
_CHART_WINDOWS = """
    create or replace temp view chart_windows as
    with sources as (
        select deployment, source from windows
        where deployment not in (select deployment from requests where drafted > 0 and deployment is not null)
        group by deployment, source
        qualify row_number() over (partition by deployment order by count(*) desc, source) = 1
    )
    select w.* from windows as w semi join sources as c on c.deployment = w.deployment and c.source = w.source
"""

# A chart row's deployment in the queries below: itself when drawn on its own (or when nothing is pooled: a NULL
# list), else the pooled series' label, from two positional parameters (ChartScope.params): the drawn deployments
# (VARCHAR[] or NULL) and the pooled label.


def rows(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None) -> list[Row]:
    cur = con.execute(sql, list(params or []))
    names = [d[0] for d in cur.description or []]
    return [dict(zip(names, r)) for r in cur.fetchall()]


@dataclass(frozen=True)
class ChartScope:
    """Which deployments the charts draw one by one (the busiest by drafted tokens, then by requests and engine
    windows); every other deployment is pooled into one series labelled ``other`` (None when nothing is pooled)."""

    drawn: tuple[str, ...]
    other: str | None = None
    pooled: int = 0  # deployments in the pooled series
    pooled_drafted: float = 0.0  # their share of all drafted tokens, in [0, 1]

    def params(self) -> list[Any]:
        """The two parameters of the queries' chart deployment (see the comment above ChartScope)."""
        return [list(self.drawn) if self.other is not None else None, self.other]


def chart_scope(con: duckdb.DuckDBPyConnection, limit: int | None = None, windows: bool = True) -> ChartScope:
    """The busiest ``limit`` (default MAX_DEPLOYMENTS) deployments, requests and engine windows alike (``windows``
    False: by their request records only, for the charts only requests feed): one query over the store, however
    many deployments it holds."""
    limit = MAX_DEPLOYMENTS if limit is None else limit
    ranked = con.execute(
        """
        with t as (
            select deployment, sum(drafted) filter (where coalesce(tau, 1) > 0 and drafted > 0) as drafted,
                   count(*) as records
            from requests group by deployment
            union all
            select deployment, sum(drafted) filter (where drafted > 0), count(*) from windows where ?
            group by deployment
        )
        select deployment, coalesce(sum(drafted), 0)::double as drafted, sum(records) as records
        from t group by deployment
        order by drafted desc, records desc, deployment
        """,
        [windows],
    ).fetchall()
    if len(ranked) <= limit:
        return ChartScope(tuple(r[0] for r in ranked))
    names = {r[0] for r in ranked}
    rest = ranked[limit:]
    other = f"other ({len(rest)} deployments)"
    while other in names:  # deployment names are log text: never merge the pool into a real deployment
        other += " (pooled)"
    total = sum(r[1] for r in ranked)
    return ChartScope(
        tuple(r[0] for r in ranked[:limit]),
        other,
        len(rest),
        sum(r[1] for r in rest) / total if total else 0.0,
    )


def _scope_params(scope: ChartScope | None) -> list[Any]:
    return scope.params() if scope is not None else [None, None]


def bucket_seconds(con: duckdb.DuckDBPyConnection) -> int:
    """The width of the time buckets used by every time-series chart: the finest of BUCKETS_S that gives at most
    MAX_BUCKETS buckets over the data's span and, on average, at least MIN_REQUESTS requests per deployment and
    bucket (so a rate is not a coin flip). A span too long even for weekly buckets gets whole weeks wide enough to
    stay within MAX_BUCKETS."""
    span_s, per_deployment = con.execute(
        """
        with t as (
            select ts, deployment from requests
            union all select end_ts as ts, deployment from windows
        )
        select epoch(max(ts)) - epoch(min(ts)), count(*) / greatest(count(distinct deployment), 1) from t
        """
    ).fetchone() or (None, None)
    seconds = float(span_s or 0.0)
    for width in BUCKETS_S:
        buckets = max(seconds / width, 1.0)
        if buckets <= MAX_BUCKETS and float(per_deployment or 0) / buckets >= MIN_REQUESTS:
            return width
    week = BUCKETS_S[-1]
    return week * max(1, math.ceil(seconds / (MAX_BUCKETS * week)))


def acceptance_over_time(
    con: duckdb.DuckDBPyConnection, bucket_s: int, scope: ChartScope | None = None
) -> list[Row]:
    """acceptance_rate = accepted / drafted per deployment and time bucket, from requests (tau > 0) and windows.

    Engine windows are counted at their end time, only for deployments without speculative request records and from
    one source each (``_CHART_WINDOWS``). Each ratio is over the records that have both of its counts (as summary).
    Buckets with nothing drafted are left out. With a ``scope`` that
    pools deployments, the pooled ones form one series whose rate is their summed accepted over summed drafted.
    """
    con.execute(_CHART_WINDOWS)
    return rows(
        con,
        """
        with counts as (
            select deployment, ts, drafted, accepted, verify_steps::double as verify_steps from requests
            where coalesce(tau, 1) > 0 and drafted > 0
            union all
            select deployment, end_ts as ts, drafted, accepted, verify_steps from chart_windows where drafted > 0
        ),
        final as (
            select case when coalesce(list_contains(?::varchar[], deployment), true) then deployment else ? end as deployment,
                   time_bucket(to_seconds(?::double), ts) as ts,
                   sum(drafted) as drafted,
                   sum(accepted) as accepted,
                   sum(verify_steps) as verify_steps,
                   -- each ratio over the records that have both of its counts (docs/glossary.md), as summary does
                   sum(accepted) / nullif(sum(drafted) filter (where accepted is not null), 0) as acceptance_rate,
                   1 + sum(accepted) filter (where verify_steps is not null)
                       / nullif(sum(verify_steps) filter (where accepted is not null), 0) as mean_acceptance_length
            from counts
            group by all
        )
        select * from final order by deployment, ts
        """,
        [*_scope_params(scope), float(bucket_s)],
    )


def quality_over_time(
    con: duckdb.DuckDBPyConnection, bucket_s: int, scope: ChartScope | None = None
) -> list[Row]:
    """Long format (deployment, ts, metric, value): acceptance_rate, quality and shadow-match rate per bucket.

    The fast-but-wrong view: acceptance going up while quality or the shadow-match rate goes down. Pooled
    deployments (``scope``) form one series over all their requests.
    """
    wide = rows(
        con,
        """
        select case when coalesce(list_contains(?::varchar[], deployment), true) then deployment else ? end as deployment,
               time_bucket(to_seconds(?::double), ts) as ts,
               sum(accepted) filter (where coalesce(tau, 1) > 0 and drafted is not null)
                   / nullif(sum(drafted) filter (where coalesce(tau, 1) > 0 and accepted is not null), 0)
                   as acceptance_rate,
               avg(quality) as quality,
               avg(shadow_match::double) as shadow_match_rate
        from requests
        group by all
        having count(quality) > 0 or count(shadow_match) > 0
        order by deployment, ts
        """,
        [*_scope_params(scope), float(bucket_s)],
    )
    out: list[Row] = []
    for r in wide:
        for metric in ("acceptance_rate", "quality", "shadow_match_rate"):
            if r[metric] is not None:
                out.append(
                    {"deployment": r["deployment"], "ts": r["ts"], "metric": metric, "value": r[metric]}
                )
    return out


def _wilson(reached: float, eligible: float) -> tuple[float, float]:
    """95% Wilson interval of a proportion; derived engine counts may be fractional, so they are rounded."""
    n = max(int(round(eligible)), 1)
    k = min(max(int(round(reached)), 0), n)
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def position_acceptance(con: duckdb.DuckDBPyConnection, scope: ChartScope | None = None) -> list[Row]:
    """Conditional acceptance per draft position and deployment, with a 95% Wilson interval.

    cond_alpha[i] = P(draft token i accepted | tokens 1..i-1 accepted) = reached_i / eligible_i, where, per verify
    step, reached_i counts steps whose accepted prefix is at least i and eligible_i counts steps that drafted at least
    i tokens and accepted the first i-1. From engine per-position counts a[i] (steps whose accepted count reached
    i+1) it is a[i] / a[i-1], with a[-1] = verify_steps. Steps are used for requests that have them; per-request and
    per-window arrays are used otherwise (windows only as ``_CHART_WINDOWS`` selects them), so no step is counted
    twice. Pooled deployments (``scope``) sum their
    counts into one series.
    """
    con.execute(_CHART_WINDOWS)
    counts = rows(
        con,
        """
        with pos as (select unnest(range(1, ? + 1)) as i),
        from_steps as (
            select r.deployment, pos.i as position,
                   count(*) filter (where s.accepted >= pos.i)::double as reached,
                   count(*)::double as eligible
            from steps s join requests r using (request_id) join pos on s.drafted >= pos.i and s.accepted >= pos.i - 1
            group by all
        ),
        request_arrays as (
            select deployment, verify_steps::double as verify_steps, accepted_per_position::double[] as a
            from requests
            where accepted_per_position is not null and verify_steps > 0
              and request_id not in (select request_id from steps)
            union all
            select deployment, verify_steps, accepted_per_position as a
            from chart_windows
            where accepted_per_position is not null and verify_steps > 0
        ),
        from_arrays as (
            select deployment, pos.i as position,
                   sum(a[pos.i]) as reached,
                   sum(case when pos.i = 1 then verify_steps else a[pos.i - 1] end) as eligible
            from request_arrays join pos on pos.i <= len(a)
            group by all
        ),
        final as (
            select case when coalesce(list_contains(?::varchar[], deployment), true) then deployment else ? end as deployment, position, sum(reached) as reached, sum(eligible) as eligible
            from (select * from from_steps union all select * from from_arrays)
            group by all
            having sum(eligible) > 0
        )
        select * from final order by deployment, position
        """,
        [MAX_POSITIONS, *_scope_params(scope)],
    )
    for r in counts:
        r["cond_alpha"] = r["reached"] / r["eligible"]
        r["ci_low"], r["ci_high"] = _wilson(r["reached"], r["eligible"])
    return counts


def batch_bucket(batch_size: int) -> str:
    """Power-of-two batch-size buckets: 1, 2-3, 4-7, 8-15, ..."""
    if batch_size <= 1:
        return "1"
    low = 1 << (batch_size.bit_length() - 1)
    return f"{low}-{2 * low - 1}"


def stage_time_by_batch(con: duckdb.DuckDBPyConnection, scope: ChartScope | None = None) -> list[Row]:
    """Draft and verify milliseconds per emitted token, per deployment and batch-size bucket.

    Per emitted token so the two stages add up to the speculative per-token latency: a verify step emits
    accepted + 1 tokens (the accepted draft prefix plus the target's own token). Steps are used where the store has
    them; request totals (verify_steps + accepted tokens) otherwise. Pooled deployments (``scope``) sum into one.
    """
    raw = rows(
        con,
        """
        with per_step as (
            select r.deployment, coalesce(s.batch_size, r.batch_size) as batch_size,
                   s.draft_ms, s.verify_ms, s.accepted + 1 as emitted
            from steps s join requests r using (request_id)
            where s.drafted > 0 and s.verify_ms is not null
        ),
        per_request as (
            select deployment, batch_size, draft_ms, verify_ms, accepted + verify_steps as emitted
            from requests
            where verify_steps > 0 and verify_ms is not null and request_id not in (select request_id from steps)
        ),
        final as (
            select case when coalesce(list_contains(?::varchar[], deployment), true) then deployment else ? end as deployment, batch_size,
                   sum(coalesce(draft_ms, 0)) as draft_ms, sum(verify_ms) as verify_ms, sum(emitted) as emitted
            from (select * from per_step union all select * from per_request)
            where batch_size is not null and emitted > 0
            group by all
        )
        select * from final order by deployment, batch_size
        """,
        _scope_params(scope),
    )
    merged: dict[tuple[str, str], Row] = {}
    for r in raw:
        key = (r["deployment"], batch_bucket(int(r["batch_size"])))
        m = merged.setdefault(
            key,
            {
                "deployment": key[0],
                "batch_bucket": key[1],
                "low": int(r["batch_size"]),
                "d": 0.0,
                "v": 0.0,
                "n": 0,
            },
        )
        m["low"] = min(m["low"], int(r["batch_size"]))
        m["d"] += r["draft_ms"]
        m["v"] += r["verify_ms"]
        m["n"] += r["emitted"]
    out: list[Row] = []
    for m in sorted(merged.values(), key=lambda m: (m["deployment"], m["low"])):
        for stage, total in (("draft", m["d"]), ("verify", m["v"])):
            out.append(
                {
                    "deployment": m["deployment"],
                    "batch_bucket": m["batch_bucket"],
                    "batch_low": m["low"],
                    "stage": stage,
                    "ms_per_token": total / m["n"],
                    "tokens": m["n"],
                }
            )
    return out


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def findings(con: duckdb.DuckDBPyConnection) -> list[Row]:
    """The latest diagnose run's findings, most severe first (the table `flag --finding N` refers to)."""
    out = rows(
        con,
        """
        select finding_id, run_at, kind, deployment, segment, severity, summary, evidence, since
        from findings
        order by case severity when 'high' then 0 when 'medium' then 1 else 2 end, finding_id
        """,
    )
    for r in out:
        segment = _json(r["segment"]) or {}
        r["segment"] = segment if isinstance(segment, dict) else {"segment": segment}
        r["evidence"] = _json(r["evidence"]) or {}
    return out


def timeline_markers(
    found: list[Row], drawn: Collection[str] | None = None, limit: int | None = None
) -> list[Row]:
    """Vertical markers for the acceptance chart: each finding with a start time (what = "finding"), and each
    configuration change diagnose saw coincide with one (evidence.config_changes[].at; what = "config change").
    lane (0..3) staggers the labels of nearby markers.

    drawn: keep only the markers of these deployments (and of findings over all deployments); limit: keep at most
    this many, those of the most severe findings first (``found`` is in the findings table's order)."""
    marks: list[Row] = []
    seen: set[tuple[Any, ...]] = set()
    for f in found:
        deployment = f["deployment"] or "all"
        if f["since"] is not None:
            marks.append(
                {"since": f["since"], "label": f"#{f['finding_id']} {f['kind']}", "deployment": deployment,
                 "summary": f["summary"], "what": "finding"}
            )  # fmt: skip
        changes = f["evidence"].get("config_changes") if isinstance(f["evidence"], dict) else None
        for change in changes or []:
            if not isinstance(change, dict) or not change.get("at"):
                continue
            try:
                at = datetime.fromisoformat(str(change["at"])).replace(tzinfo=None)
            except ValueError:
                continue  # a change without a readable time is in the evidence table, not on the chart
            key = (deployment, change.get("setting"), at)
            if key in seen:
                continue
            seen.add(key)
            text = f"{change.get('setting')} {change.get('before')} -> {change.get('after')}"
            marks.append(
                {"since": at, "label": text, "deployment": deployment, "summary": f"{deployment}: {text}",
                 "what": "config change"}
            )  # fmt: skip
    if drawn is not None:
        keep = set(drawn)
        marks = [m for m in marks if m["deployment"] in keep or m["deployment"] == "all"]
    if limit is not None:
        marks = marks[:limit]
    marks.sort(key=lambda m: m["since"])
    for i, m in enumerate(marks):
        m["lane"] = i % 4
    return marks


def rejects_by_reason(con: duckdb.DuckDBPyConnection) -> list[Row]:
    """Data-quality notes: quarantined lines per reason, with the first example (path, line, detail)."""
    return rows(
        con,
        """
        select reason, count(*) as lines, count(distinct path) as files,
               arg_min(path, line) as example_path, min(line) as example_line,
               arg_min(detail, line) as example_detail
        from rejects
        group by reason
        order by lines desc, reason
        """,
    )


def ingest_summary(con: duckdb.DuckDBPyConnection) -> Row:
    """Totals over the ingest ledger and the store (for the report's header)."""
    r = rows(
        con,
        """
        select (select count(*) from ingest_ledger) as files,
               (select count(*) from requests) as requests,
               (select count(*) from steps) as steps,
               (select count(*) from windows) as windows,
               (select count(*) from rejects) as rejected,
               -- traces and engine windows alike
               (select count(distinct deployment) from (
                    select deployment from requests union select deployment from windows
               )) as deployments,
               (select min(t) from (select min(ts) as t from requests union all select min(end_ts) from windows))
                   as first_ts,
               (select max(t) from (select max(ts) as t from requests union all select max(end_ts) from windows))
                   as last_ts
        """,
    )
    return r[0]


def replayed(con: duckdb.DuckDBPyConnection, limit: int = 20) -> list[Row]:
    """The most recent replay runs (at most ``limit``), each with its prompt (when the store has it) and tokens.

    tokens: the drafted tokens in order, each with its step, accepted flag and target probability p (confidence).
    """
    runs = rows(
        con,
        """
        select rr.run_id, rr.prompt_id, rr.request_id, rr.finding_id, rr.created_at, rr.target, rr.draft, rr.tau,
               rr.temperature, rr.acceptance, rr.steps, rr.drafted, rr.accepted, rr.acceptance_rate,
               rr.mean_acceptance_length, rr.speedup, rr.matches_target_only, rr.output_text, r.prompt
        from replay_runs rr left join requests r using (request_id)
        order by rr.created_at desc, rr.run_id, rr.prompt_id
        limit ?
        """,
        [limit],
    )
    for run in runs:
        run["tokens"] = rows(
            con,
            """
            select step, position, token_id, token_text, q, p, accepted
            from replay_tokens where run_id = ? and prompt_id = ?
            order by step, position
            """,
            [run["run_id"], run["prompt_id"]],
        )
    return runs


def busiest_recommendations(recommendations: list[Row], limit: int) -> list[Row]:
    """The ``limit`` recommendations resting on the most verify steps (then by label), in their given order: the
    speedup chart draws one curve each, and curves cannot be pooled."""
    if len(recommendations) <= limit:
        return recommendations
    ranked = sorted(
        range(len(recommendations)),
        key=lambda i: (-(recommendations[i].get("verify_steps") or 0), str(recommendations[i].get("label"))),
    )
    keep = set(ranked[:limit])
    return [r for i, r in enumerate(recommendations) if i in keep]


def speedup_markers(recommendations: list[Row]) -> list[Row]:
    """Current and recommended tau per recommendation row, for the speedup-versus-tau chart."""
    marks: list[Row] = []
    for rec in recommendations:
        label = rec.get("label", "")
        for role in ("current", "recommended"):
            tau = rec.get(f"{role}_tau")
            if tau is not None:
                marks.append(
                    {"label": label, "role": role, "tau": int(tau), "speedup": rec.get(f"{role}_speedup")}
                )
    return marks


def latest_ts(values: list[Row], key: str = "ts") -> datetime | None:
    stamps = [r[key] for r in values if r.get(key) is not None]
    return max(stamps) if stamps else None
