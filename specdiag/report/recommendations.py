"""Recommendations for the report: ``specdiag.recommend.recommend_from_store`` rows, normalised for charts and tables.

recommend's rows (as in ``specdiag recommend --json``) carry deployment, segment, current_tau, recommended_tau,
alpha, cost_ratio, current_speedup, expected_speedup, ci = [lo, hi] and a curve of {tau, speedup, ...} with its
bootstrap interval. The report adds a ``label`` (deployment plus segment) and reads each curve point's interval as
speedup_low / speedup_high.
"""

from __future__ import annotations

from typing import Any

import duckdb

from specdiag.report.data import Row

N_BOOT = 200  # bootstrap resamples for the report's bands (recommend's own default may be larger)


def label(rec: Row) -> str:
    segment = rec.get("segment") or {}
    parts = [str(rec.get("deployment") or "all")]
    parts += [f"{k}={v}" for k, v in sorted(segment.items())] if isinstance(segment, dict) else [str(segment)]
    return " ".join(parts)


def _interval(point: Row) -> tuple[Any, Any]:
    """A curve point's interval, whichever of recommend's spellings it uses."""
    ci = point.get("ci")
    if isinstance(ci, list | tuple) and len(ci) == 2:
        return ci[0], ci[1]
    for low, high in (("speedup_low", "speedup_high"), ("ci_low", "ci_high"), ("lo", "hi")):
        if low in point:
            return point[low], point.get(high)
    return None, None


def normalise(rec: Row) -> Row:
    out = dict(rec)
    out["label"] = label(rec)
    ci = rec.get("ci")
    out["ci_low"], out["ci_high"] = (
        (ci[0], ci[1]) if isinstance(ci, list | tuple) and len(ci) == 2 else (None, None)
    )
    curve = []
    for point in rec.get("curve") or []:
        low, high = _interval(point)
        curve.append(
            {"tau": point["tau"], "speedup": point.get("speedup"), "speedup_low": low, "speedup_high": high}
        )
    out["curve"] = curve
    if out.get("current_speedup") is None and rec.get("current_tau") is not None:
        out["current_speedup"] = next((p["speedup"] for p in curve if p["tau"] == rec["current_tau"]), None)
    out["recommended_speedup"] = rec.get("expected_speedup")
    if out["recommended_speedup"] is None:
        out["recommended_speedup"] = next(
            (p["speedup"] for p in curve if p["tau"] == rec.get("recommended_tau")), None
        )
    return out


def recommendations(con: duckdb.DuckDBPyConnection) -> tuple[list[Row], list[Row]]:
    """(one normalised row per deployment (recommend's default grouping), the deployments recommend skipped, each
    with its label and reason, as ``specdiag recommend --json`` lists them under ``skipped``)."""
    from specdiag.recommend import recommend_with_skipped

    recs, skipped = recommend_with_skipped(con, n_boot=N_BOOT, seed=0)
    return [normalise(r) for r in recs], [dict(s, label=label(s)) for s in skipped]
