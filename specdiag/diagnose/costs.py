"""Per-deployment cost and acceptance summaries, shared by the bottleneck and tau findings.

The cost model is recommend's (``specdiag.costs.all_cost_fits``: replay's measured profile, else a least-squares fit
over timed steps). Stores without step rows (engine per-request records, or traces logged without steps) fall back to
the same t_verify = floor + compute * n * B fitted over requests in queries/diagnose_costs.sql (mean verify ms per
step of each request against its n x B).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl

from specdiag import stats
from specdiag.costs import CostFit
from specdiag.diagnose.changepoint import METRICS
from specdiag.speedup import CostModel, alpha_from_mal
from specdiag.stats import Ratio


@dataclass(frozen=True)
class DeploymentCosts:
    deployment: str
    tau: int  # the tau the deployment runs now (the most common in its last day), else the one most steps ran with
    acceptance_rate: float
    mal: float  # mean acceptance length at that tau: 1 + accepted / verify_steps
    alpha: float  # i.i.d. per-token acceptance solving Leviathan Eq. (1) for that MAL
    cost: CostModel | None  # fitted t_verify(n, B) = floor + compute * n * B and the draft's ms per token
    compute_z: float  # fitted compute slope / its standard error
    cost_source: (
        str  # 'profile' or 'fitted' (recommend's, over steps), 'fitted-requests' (diagnose's fallback)
    )
    batch_size: float  # mean batch size of speculative requests
    draft_share: float  # draft ms / (draft ms + verify ms) of speculative steps
    n: int  # speculative requests


def ratio(rows: pl.DataFrame, metric: str) -> Ratio:
    vals = [float(rows[c].fill_null(0).sum()) for c in METRICS[metric]]
    return stats.ratio_from_sums(*vals)


def _slope_z(fit: CostFit) -> float:
    """t statistic of the compute slope from the fit's r^2 over n points: t = sqrt(r^2 (n - 2) / (1 - r^2))."""
    r2 = fit.r2
    if not fit.identified or r2 is None or fit.model.compute_ms <= 0 or fit.n_steps < 3:
        return float("nan")
    return math.sqrt(r2 * (fit.n_steps - 2) / max(1.0 - r2, 1e-12))


def summarise(costs: pl.DataFrame, fits: dict[str, CostFit] | None = None) -> list[DeploymentCosts]:
    """One summary per deployment with speculative traffic; ``fits`` (recommend's cost fits) take precedence."""
    out = []
    for key, rows in costs.group_by("deployment", maintain_order=True):
        spec = rows.filter(pl.col("tau") > 0)
        if spec.is_empty() or float(spec["verify_steps"].sum()) <= 0:
            continue
        by_tau = spec.group_by("tau").agg(pl.col("verify_steps").sum()).sort("verify_steps", descending=True)
        latest = rows["current_tau"][0] if "current_tau" in rows.columns else None
        tau = int(latest) if latest is not None else int(by_tau["tau"][0])
        at_tau = spec.filter(pl.col("tau") == tau)
        mal = 1.0 + float(at_tau["accepted"].sum()) / max(float(at_tau["verify_steps"].sum()), 1.0)
        first = rows.row(0, named=True)
        floor, compute, draft = first["fit_floor_ms"], first["fit_compute_ms"], first["draft_ms_per_token"]
        cost = None
        if all(v is not None and math.isfinite(v) for v in (floor, compute, draft)) and floor > 0:
            cost = CostModel(
                floor_ms=float(floor), compute_ms=max(float(compute), 0.0), draft_ms_per_token=float(draft)
            )
        se = first["fit_compute_se"]
        compute_z = float(compute) / float(se) if cost is not None and se else float("nan")
        source = "fitted-requests"
        fit = (fits or {}).get(str(key[0]))
        if fit is not None:
            cost, compute_z, source = fit.model, _slope_z(fit), fit.source
        draft_ms = float(spec["draft_ms"].fill_null(0).sum())
        verify_ms = float(spec["verify_ms"].fill_null(0).sum())
        weights = spec["n"].cast(pl.Float64)
        batch = float((spec["mean_batch_size"].fill_null(0) * weights).sum()) / float(weights.sum())
        out.append(
            DeploymentCosts(
                deployment=str(key[0]),
                tau=tau,
                acceptance_rate=ratio(spec, "acceptance_rate").value,
                mal=mal,
                alpha=alpha_from_mal(mal, tau),
                cost=cost,
                compute_z=compute_z,
                cost_source=source,
                batch_size=batch,
                draft_share=draft_ms / (draft_ms + verify_ms) if draft_ms + verify_ms > 0 else float("nan"),
                n=int(spec["n"].sum()),
            )
        )
    return out
