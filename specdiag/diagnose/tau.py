"""tau_too_high / tau_too_low: the speedup-maximising tau beats the current one by at least MIN_GAIN.

The recommendation is recommend's (``specdiag.recommend.recommend_from_store``: censored per-position acceptance,
fitted costs, request bootstrap), and a finding also needs its bootstrap interval's lower end above the current
speedup and at least ``stats.MIN_REQUESTS`` speculative requests. For deployments recommend cannot estimate (no step rows), the speedup curve comes from specdiag.speedup with
the i.i.d. alpha that reproduces the observed mean acceptance length (Leviathan Eq. 1) and diagnose's fallback costs.
"""

from __future__ import annotations

import math
from typing import Any

from specdiag import stats
from specdiag.diagnose.costs import DeploymentCosts
from specdiag.findings import Finding
from specdiag.speedup import best_tau, speedup_curve

MIN_GAIN = 0.10


def _from_summary(d: DeploymentCosts) -> dict[str, Any] | None:
    """A recommendation in recommend's shape from the analytic model (no interval)."""
    if d.cost is None or not math.isfinite(d.alpha) or d.tau > 16:
        return None
    curve = speedup_curve(d.alpha, d.cost, d.batch_size)
    best = best_tau(curve)
    current, expected = curve[d.tau]["speedup"], curve[best]["speedup"]
    return {
        "deployment": d.deployment,
        "requests": d.n,
        "current_tau": d.tau,
        "recommended_tau": best,
        "current_speedup": current,
        "expected_speedup": expected,
        "gain": expected / current - 1.0 if current > 0 else float("nan"),
        "ci": None,
        "alpha": d.alpha,
        "cost_ratio": d.cost.cost_ratio(d.batch_size),
        "batch_size": d.batch_size,
        "costs": {**d.cost.to_dict(), "source": d.cost_source},
        "basis": "analytic (i.i.d. alpha from mean acceptance length)",
    }


def findings(summaries: list[DeploymentCosts], recommendations: list[dict[str, Any]]) -> list[Finding]:
    recs = {r["deployment"]: {**r, "basis": "recommend"} for r in recommendations if not r.get("segment")}
    for d in summaries:
        if d.deployment not in recs and (fallback := _from_summary(d)) is not None:
            recs[d.deployment] = fallback
    out = []
    for dep, r in sorted(recs.items()):
        current, best = r["current_tau"], r["recommended_tau"]
        gain = r["gain"]
        # a bootstrap interval (recommend's) must clear the current speedup; the analytic curve has none, and either
        # rests on at least MIN_REQUESTS speculative requests (a few requests give a narrow, meaningless interval)
        confident = r["ci"] is None or r["ci"][0] > r["current_speedup"]
        enough = r.get("requests", 0) >= stats.MIN_REQUESTS
        if current is None or best == current or not (gain >= MIN_GAIN) or not confident or not enough:
            continue
        kind = "tau_too_high" if best < current else "tau_too_low"
        summary = (
            f"{dep}: tau {best} instead of {current} would give {r['expected_speedup']:.2f}x instead of "
            f"{r['current_speedup']:.2f}x (alpha {r['alpha']:.2f}, batch {r['batch_size']:.0f})."
        )
        evidence = {
            k: r.get(k)
            for k in (
                "current_tau",
                "recommended_tau",
                "current_speedup",
                "expected_speedup",
                "gain",
                "ci",
                "alpha",
                "cost_ratio",
                "batch_size",
                "costs",
                "basis",
            )
        }
        out.append(Finding(kind, dep, {}, "high" if gain >= 0.25 else "medium", summary, evidence))
    return out
