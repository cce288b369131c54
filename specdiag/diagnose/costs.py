"""Per-deployment cost and acceptance summaries from queries/diagnose_costs.sql, shared by the bottleneck and tau
findings."""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl

from specdiag import stats
from specdiag.diagnose.changepoint import METRICS
from specdiag.speedup import CostModel, alpha_from_mal
from specdiag.stats import Ratio


@dataclass(frozen=True)
class DeploymentCosts:
    deployment: str
    tau: int  # the tau most speculative steps ran with
    acceptance_rate: float
    mal: float  # mean acceptance length at that tau: 1 + accepted / verify_steps
    alpha: float  # i.i.d. per-token acceptance solving Leviathan Eq. (1) for that MAL
    cost: CostModel | None  # fitted t_verify(n, B) = floor + compute * n * B and the draft's ms per token
    compute_z: float  # fitted compute slope / its standard error
    batch_size: float  # mean batch size of speculative requests
    draft_share: float  # draft ms / (draft ms + verify ms) of speculative steps
    n: int  # speculative requests


def ratio(rows: pl.DataFrame, metric: str) -> Ratio:
    vals = [float(rows[c].fill_null(0).sum()) for c in METRICS[metric]]
    return stats.ratio_from_sums(*vals)


def summarise(costs: pl.DataFrame) -> list[DeploymentCosts]:
    out = []
    for key, rows in costs.group_by("deployment", maintain_order=True):
        spec = rows.filter(pl.col("tau") > 0)
        if spec.is_empty() or float(spec["verify_steps"].sum()) <= 0:
            continue
        by_tau = spec.group_by("tau").agg(pl.col("verify_steps").sum()).sort("verify_steps", descending=True)
        tau = int(by_tau["tau"][0])
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
                batch_size=batch,
                draft_share=draft_ms / (draft_ms + verify_ms) if draft_ms + verify_ms > 0 else float("nan"),
                n=int(spec["n"].sum()),
            )
        )
    return out
