"""speculation_harmful, verify_bound and draft_bottleneck: where the cost side of speculation goes wrong.

- speculation_harmful: decode ms per output token of speculative requests is no better than that of the tau = 0
  control traffic of the same deployment and batch bucket (a request-clustered ratio of ratios); without control
  traffic, the modelled speedup (fitted costs, Leviathan Eq. 1 tokens per step) is below 1.
- verify_bound: the fitted t_verify = floor + compute * n * B has a clearly positive compute slope and, at a batch
  bucket's observed n x B, the compute term is larger than the memory-bound floor.
- draft_bottleneck: c >= alpha (Leviathan et al. 2023 Cor. 3.9: speculation only helps when alpha > c) unless
  recommend's curve finds a tau > 0 that pays, or the draft takes more than DRAFT_SHARE of every step's time.
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from specdiag import stats
from specdiag.diagnose.costs import DeploymentCosts, ratio
from specdiag.findings import Finding
from specdiag.speedup import speedup

DRAFT_SHARE = 0.5
COMPUTE_Z = 4.0  # the compute slope must be this many standard errors above zero


def _loss_severity(loss: float) -> str:
    return "high" if loss >= 0.10 else "medium" if loss >= 0.03 else "low"


def harmful(costs: pl.DataFrame, summaries: list[DeploymentCosts]) -> list[Finding]:
    out = []
    with_control = set()
    for key, rows in costs.group_by(["deployment", "batch_bucket"], maintain_order=True):
        dep, bucket = str(key[0]), str(key[1])
        spec, ctrl = (
            ratio(rows.filter(pl.col("tau") > 0), "ms_per_token"),
            ratio(rows.filter(pl.col("tau") == 0), "ms_per_token"),
        )
        if min(spec.n, ctrl.n) < stats.MIN_REQUESTS or not (spec.value > 0 and ctrl.value > 0):
            continue
        with_control.add(dep)
        s = ctrl.value / spec.value  # measured speedup: control ms per token / speculative ms per token
        # delta method on log s: var = (se_c / c)^2 + (se_s / s)^2
        se_log = math.hypot(ctrl.se / ctrl.value, spec.se / spec.value)
        lo, hi = s * math.exp(-1.96 * se_log), s * math.exp(1.96 * se_log)
        if s <= 1.0:
            summary = (
                f"{dep} at batch {bucket}: speculation runs {spec.value:.2f} ms per output token against "
                f"{ctrl.value:.2f} ms for tau = 0 control traffic (speedup {s:.2f}); switch it off or lower tau here."
            )
            evidence = {
                "speedup": s,
                "speedup_ci": [lo, hi],
                "ms_per_token_speculative": spec.value,
                "ms_per_token_control": ctrl.value,
                "n_speculative": spec.n,
                "n_control": ctrl.n,
                "basis": "measured against control",
            }
            out.append(
                Finding(
                    "speculation_harmful",
                    dep,
                    {"batch_bucket": bucket},
                    _loss_severity(1 - s),
                    summary,
                    evidence,
                )
            )
    for d in summaries:
        if d.deployment in with_control or d.cost is None or not math.isfinite(d.alpha):
            continue
        s = speedup(d.alpha, d.tau, d.cost, d.batch_size)
        if s <= 1.0:
            summary = (
                f"{d.deployment}: the fitted costs and alpha {d.alpha:.2f} model a speedup of {s:.2f} at tau "
                f"{d.tau} and batch {d.batch_size:.0f}; no control traffic to confirm it."
            )
            evidence = {
                "speedup": s,
                "alpha": d.alpha,
                "tau": d.tau,
                "batch_size": d.batch_size,
                "cost_model": d.cost.to_dict(),
                "basis": "modelled (no control traffic)",
            }
            out.append(
                Finding("speculation_harmful", d.deployment, {}, _loss_severity(1 - s), summary, evidence)
            )
    return out


def verify_bound(costs: pl.DataFrame, summaries: list[DeploymentCosts]) -> list[Finding]:
    out = []
    for d in summaries:
        if d.cost is None or not (d.compute_z >= COMPUTE_Z):
            continue
        rows = costs.filter((pl.col("deployment") == d.deployment) & (pl.col("tau") > 0))
        shares = {}
        for key, cell in rows.group_by("batch_bucket", maintain_order=True):
            w = cell["n"].cast(pl.Float64)
            # mean tokens in flight n x B of the bucket's speculative requests
            nb = float(((cell["tau"] + 1) * cell["mean_batch_size"].fill_null(0) * w).sum()) / float(w.sum())
            shares[str(key[0])] = d.cost.compute_ms * nb / (d.cost.floor_ms + d.cost.compute_ms * nb)
        dominated = [b for b, s in shares.items() if s > 0.5]
        if not dominated:
            continue
        worst = max(dominated, key=lambda b: shares[b])
        summary = (
            f"{d.deployment}: verification is compute-bound at batch {', '.join(sorted(dominated))} "
            f"(compute term {shares[worst]:.0%} of the verify pass at batch {worst}); lower tau at large batch."
        )
        evidence = {
            "cost_model": d.cost.to_dict(),
            "compute_slope_z": d.compute_z,
            "compute_share_by_batch_bucket": shares,
        }
        sev = "high" if shares[worst] > 0.75 else "medium"
        out.append(Finding("verify_bound", d.deployment, {"batch_bucket": worst}, sev, summary, evidence))
    return out


def draft_bottleneck(
    summaries: list[DeploymentCosts], recommendations: list[dict[str, Any]] | None = None
) -> list[Finding]:
    """``recommendations``: recommend's, whose curve (censored acceptance by position) overrules Cor. 3.9 where it
    finds a tau > 0 that pays: the corollary holds for i.i.d. acceptance, and acceptance that falls with position
    can put the i.i.d. alpha of the logged tau below c while tau 1 still beats the target alone."""
    pays = {r["deployment"]: r["recommended_tau"] > 0 for r in recommendations or [] if not r.get("segment")}
    out = []
    for d in summaries:
        c = d.cost.cost_ratio(d.batch_size) if d.cost is not None else float("nan")
        cor39 = math.isfinite(c) and math.isfinite(d.alpha) and c >= d.alpha and not pays.get(d.deployment)
        share = d.draft_share > DRAFT_SHARE
        if not (cor39 or share):
            continue
        if cor39:
            summary = (
                f"{d.deployment}: the draft costs c = {c:.2f} of a target pass but only alpha = {d.alpha:.2f} of its "
                f"tokens are accepted; speculation cannot help while alpha <= c (Leviathan Cor. 3.9): use a cheaper draft."
            )
        else:
            summary = (
                f"{d.deployment}: the draft takes {d.draft_share:.0%} of every speculative step; use a cheaper draft "
                f"or a smaller tau."
            )
        evidence = {
            "cost_ratio": c,
            "alpha": d.alpha,
            "draft_share": d.draft_share,
            "tau": d.tau,
            "cost_model": d.cost.to_dict() if d.cost else None,
        }
        out.append(
            Finding("draft_bottleneck", d.deployment, {}, "high" if cor39 else "medium", summary, evidence)
        )
    return out
