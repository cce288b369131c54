"""flag: representative requests of a finding (its worst and its typical cases), as prompt records for replay."""

from __future__ import annotations

import math
from typing import Any

import duckdb
import polars as pl

from specdiag.diagnose import data
from specdiag.errors import InputError, UsageError
from specdiag.findings import KINDS, Finding

# The per-request measure that makes a request "bad" for each kind, and whether low values are the bad ones.
WORST_BY: dict[str, tuple[str, bool]] = {
    "acceptance_regression": ("acceptance_rate", True),
    "fast_but_wrong": ("quality", True),
    "speculation_harmful": ("ms_per_token", False),
    "verify_bound": ("ms_per_token", False),
    "draft_bottleneck": ("ms_per_token", False),
    "tau_too_high": ("acceptance_rate", True),
    "tau_too_low": ("acceptance_rate", False),
}
# When the kind's measure was not logged: fast_but_wrong is also found from shadow matches (a mismatch is bad).
FALLBACK_BY: dict[str, tuple[str, bool]] = {"fast_but_wrong": ("shadow_match", True)}


def _requests(con: duckdb.DuckDBPyConnection, f: Finding) -> pl.DataFrame:
    """The finding's requests: its deployment and segment, speculative traffic, since the finding's start."""
    sql = f"select * from ({data.query_text('diagnose_flag').rstrip().rstrip(';')}) where tau > 0"
    params: dict[str, Any] = {}
    for i, (column, value) in enumerate(sorted(f.segment.items())):
        if column not in data.FILTER_COLUMNS:  # identifiers come from an allow-list, values are bound
            raise InputError(f"finding {f.finding_id}: cannot filter on segment field {column!r}")
        sql += f" and {column} = $v{i}"
        params[f"v{i}"] = value
    if f.since is not None:
        sql += " and ts >= $since"
        params["since"] = f.since
    # a tau finding judges the tau the deployment runs now: requests at the tau it left are not its cases
    current = f.evidence.get("current_tau") if f.kind in ("tau_too_high", "tau_too_low") else None
    if isinstance(current, int) and not isinstance(current, bool):
        sql += " and tau = $current_tau"
        params["current_tau"] = current
    # the query reads its deployment from a session variable (so that it also runs as-is in the duckdb CLI)
    return data.frame(con, sql, params, variables={"deployment": str(f.deployment)})


def _record(row: dict[str, Any], f: Finding, why: str) -> dict[str, Any]:
    return {
        "prompt_id": row["request_id"],
        "prompt": row["prompt"],
        "request_id": row["request_id"],
        "deployment": row["deployment"],
        "tau": row["tau"],
        "temperature": row["temperature"],
        "top_p": row["top_p"],
        "finding_id": f.finding_id,
        "why": why,
        "target_model": row["target_model"],
        "draft_model": row["draft_model"],
        "acceptance": row.get("acceptance"),  # the production rule: replay emulates a typical one
    }


def pick(f: Finding, rows: pl.DataFrame, n: int) -> list[dict[str, Any]]:
    """ceil(n/2) worst requests by the kind's measure, then the rest closest to the segment's median."""
    measure, low_is_bad = WORST_BY[f.kind]
    if rows.get_column("prompt").is_not_null().any():
        rows = rows.filter(pl.col("prompt").is_not_null())  # replay needs the text
    if f.kind in FALLBACK_BY and not rows.get_column(measure).is_not_null().any():
        measure, low_is_bad = FALLBACK_BY[f.kind]
        rows = rows.with_columns(pl.col(measure).cast(pl.Float64))
    rows = rows.filter(pl.col(measure).is_not_null() & pl.col(measure).is_finite())
    if rows.is_empty() or n <= 0:
        return []
    median = float(rows[measure].median())  # type: ignore[arg-type]
    worst = rows.sort([measure, "request_id"], descending=[not low_is_bad, False]).head(math.ceil(n / 2))
    typical = (
        rows.filter(~pl.col("request_id").is_in(worst["request_id"].implode()))
        .with_columns((pl.col(measure) - median).abs().alias("_distance"))
        .sort(["_distance", "request_id"])
        .head(n - worst.height)
    )
    out = [
        _record(r, f, f"worst: {measure} {r[measure]:.3g} (segment median {median:.3g})")
        for r in worst.iter_rows(named=True)
    ]
    out += [
        _record(r, f, f"typical: {measure} {r[measure]:.3g} (segment median {median:.3g})")
        for r in typical.iter_rows(named=True)
    ]
    return out


def flag(
    con: duckdb.DuckDBPyConnection, finding_id: int | None = None, kind: str | None = None, n: int = 8
) -> list[dict[str, Any]]:
    """Prompt records for finding ``finding_id``, or for every saved finding of ``kind`` (n per finding)."""
    from specdiag.diagnose import load_findings

    if (finding_id is None) == (kind is None):
        raise UsageError("flag needs exactly one of --finding N or --kind K")
    if kind is not None and kind not in KINDS:
        raise UsageError(f"unknown finding kind {kind!r}", hint=f"one of {', '.join(KINDS)}")
    saved = load_findings(con)
    chosen = [f for f in saved if f.finding_id == finding_id or (kind is not None and f.kind == kind)]
    if not chosen:
        what = f"finding {finding_id}" if finding_id is not None else f"no finding of kind {kind}"
        verb = "is not" if finding_id is not None else "is"
        raise InputError(f"{what} {verb} in the store", hint="run `specdiag diagnose` first")
    if finding_id is not None and chosen[0].evidence.get("source"):
        f = chosen[0]
        raise InputError(
            f"finding {finding_id} comes from engine metrics ({f.evidence['source']}): the store holds no requests "
            f"of {f.deployment} to replay",
            hint="log requests in the trace format (docs/trace-format.md) to replay them",
        )
    out: list[dict[str, Any]] = []
    for f in chosen:
        if not f.evidence.get("source"):  # findings from engine metrics have no requests to pick
            out += pick(f, _requests(con, f), n)
    return out
