"""tau_too_high / tau_too_low: the speedup-maximising tau beats the current one by at least MIN_GAIN.

Speedup at tau under the fitted cost model (specdiag.speedup: tokens per step from Leviathan Eq. 1 with the i.i.d.
alpha that reproduces the observed mean acceptance length, over t(tau) = tau * t_draft + t_verify(tau + 1, B)) at the
deployment's mean batch size.
"""

from __future__ import annotations

import math

from specdiag.diagnose.costs import DeploymentCosts
from specdiag.findings import Finding
from specdiag.speedup import best_tau, speedup_curve

MIN_GAIN = 0.10


def findings(summaries: list[DeploymentCosts]) -> list[Finding]:
    out = []
    for d in summaries:
        if d.cost is None or not math.isfinite(d.alpha):
            continue
        curve = speedup_curve(d.alpha, d.cost, d.batch_size)
        best = best_tau(curve)
        current, recommended = (
            curve[d.tau]["speedup"] if d.tau < len(curve) else float("nan"),
            curve[best]["speedup"],
        )
        gain = recommended / current - 1.0 if current > 0 else float("nan")
        if best == d.tau or not (gain >= MIN_GAIN):
            continue
        kind = "tau_too_high" if best < d.tau else "tau_too_low"
        summary = (
            f"{d.deployment}: tau {best} instead of {d.tau} would give {recommended:.2f}x instead of {current:.2f}x "
            f"(alpha {d.alpha:.2f}, batch {d.batch_size:.0f})."
        )
        evidence = {
            "current_tau": d.tau,
            "recommended_tau": best,
            "current_speedup": current,
            "expected_speedup": recommended,
            "gain": gain,
            "alpha": d.alpha,
            "cost_ratio": d.cost.cost_ratio(d.batch_size),
            "batch_size": d.batch_size,
            "cost_model": d.cost.to_dict(),
            "curve": curve,
        }
        out.append(Finding(kind, d.deployment, {}, "high" if gain >= 0.25 else "medium", summary, evidence))
    return out
