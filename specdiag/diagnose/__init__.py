"""Find the few things that matter in a fleet's speculative decoding, each with its evidence.

``diagnose(con)`` runs the queries in queries/diagnose_*.sql once and derives every finding kind of
specdiag.findings.KINDS from their rows; ``save_findings`` numbers them 1..N in the ``findings`` table (replacing the
previous run's), and ``flag`` picks representative requests of a saved finding for replay. See docs/diagnose.md.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import duckdb
import polars as pl

from specdiag.costs import CostFit
from specdiag.diagnose import bottleneck, changepoint, data, fast_but_wrong, regression, tau
from specdiag.diagnose.costs import summarise
from specdiag.diagnose.flag import flag
from specdiag.errors import UsageError
from specdiag.findings import SEVERITIES, Finding
from specdiag.output import dumps
from specdiag.recommend import recommend_from_store
from specdiag.speedup import CostModel
from specdiag.store import transaction

Window = tuple[datetime, datetime]
N_BOOT = 100  # request bootstrap resamples behind each tau recommendation's interval

__all__ = ["diagnose", "flag", "load_findings", "save_findings"]


def diagnose(
    con: duckdb.DuckDBPyConnection, baseline: Window | None = None, window: Window | None = None
) -> list[Finding]:
    """Every finding, ranked: severity first, then the estimated cost (decode slowdown or speedup lost)."""
    if (baseline is None) != (window is None):
        raise UsageError(
            "--baseline and --window go together", hint="give both, or neither for a change point"
        )
    if baseline is not None and window is not None and baseline[1] > window[0]:
        raise UsageError("the baseline must end before the window starts")
    segs = data.segments(con)
    windowed = data.window_segments(con)  # deployments known only from engine metrics
    if not windowed.is_empty():
        segs = pl.concat([segs, windowed], how="diagonal_relaxed")
    cfg = data.config(con)
    costs = data.costs(con)
    found: list[Finding] = []
    if not segs.is_empty():
        if baseline is not None and window is not None:
            tests = changepoint.windows(segs, baseline, window)
        else:
            tests = changepoint.detect(segs, cfg)
        changepoint.adjust(tests)
        found += regression.findings(tests, cfg, searched=baseline is None)
        found += fast_but_wrong.findings(tests, segs, cfg)
    if not costs.is_empty():
        recs = recommend_from_store(con, n_boot=N_BOOT)
        summaries = summarise(costs, fits_of(recs))
        found += bottleneck.harmful(costs, summaries)
        found += bottleneck.verify_bound(costs, summaries)
        found += bottleneck.draft_bottleneck(summaries, recs)
        found += tau.findings(summaries, recs)
    return sorted(found, key=_rank)


def fits_of(recommendations: list[dict[str, Any]]) -> dict[str, CostFit]:
    """The cost fit behind each deployment's recommendation (recommend fits once; no second pass over steps)."""
    out = {}
    for r in recommendations:
        c = r.get("costs")
        if r.get("segment") or not c:
            continue
        model = CostModel(c["floor_ms"], c["compute_ms"], c["draft_ms_per_token"])
        out[r["deployment"]] = CostFit(
            model, c["source"], int(c["n_steps"]), bool(c["identified"]), float(c["batch_mean"]), c.get("r2")
        )
    return out


def _rank(f: Finding) -> tuple[int, float]:
    e = f.evidence
    cost = e.get("decode_slowdown") or e.get("gain") or (1 - e["speedup"] if "speedup" in e else 0.0)
    return SEVERITIES.index(f.severity), -float(cost or 0.0)


def save_findings(con: duckdb.DuckDBPyConnection, findings: list[Finding]) -> list[Finding]:
    """Replace the stored findings with these, numbered 1..N in order; sets each finding's ``finding_id``."""
    run_at = datetime.now(UTC).replace(microsecond=0, tzinfo=None)  # the store keeps naive UTC
    with transaction(con):
        con.execute("delete from findings")
        for i, f in enumerate(findings, start=1):
            f.finding_id = i
            con.execute(
                "insert into findings values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    i,
                    run_at,
                    f.kind,
                    f.deployment,
                    dumps(f.segment),
                    f.severity,
                    f.summary,
                    dumps(f.evidence),
                    f.since,
                ],
            )
    return findings


def load_findings(con: duckdb.DuckDBPyConnection) -> list[Finding]:
    rows = con.execute(
        "select finding_id, kind, deployment, segment, severity, summary, evidence, since from findings "
        "order by finding_id"
    ).fetchall()
    return [
        Finding(
            kind=r[1],
            deployment=r[2],
            segment=json.loads(r[3]) if r[3] else {},
            severity=r[4],
            summary=r[5],
            evidence=json.loads(r[6]) if r[6] else {},
            since=r[7],
            finding_id=r[0],
        )
        for r in rows
    ]
