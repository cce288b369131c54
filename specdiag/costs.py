"""Fit the forward-pass cost model from the store.

Verify time of a step is modelled as t_verify(n, B) = floor_ms + compute_ms * n * B (see
:class:`specdiag.speedup.CostModel`), with n = drafted + 1 tokens verified per sequence and B the step's batch size.
Least squares over every timed step, tau = 0 control traffic included (drafted = 0: one target token, which pins
the floor). Draft time is per drafted token: sum(draft_ms) / sum(drafted). When replay has stored measured forward
passes (``cost_profiles``) for the deployment's target/draft pair, those are preferred: they are clean measurements.

The regression runs in DuckDB (``regr_slope``/``regr_intercept`` in ``queries/recommend_costs.sql``): only one row
per deployment comes back to Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import duckdb

from specdiag.queries import find_query
from specdiag.speedup import CostModel


def load_sql(name: str) -> str:
    """Text of ``queries/<name>.sql`` (header checked by :func:`specdiag.queries.find_query`)."""
    return find_query(name).sql


@dataclass(frozen=True)
class CostFit:
    """A fitted cost model and how much to trust it."""

    model: CostModel
    source: str  # 'profile' (replay's measurements) or 'fitted' (production steps)
    n_steps: int  # timed steps (or profile points) behind the fit
    identified: bool  # False when all steps had the same n * B: floor and compute cannot be separated
    batch_mean: float  # mean batch size of speculative steps (1 when unknown)
    r2: float | None = None
    # draft_model -> draft ms per drafted token, when a deployment runs several drafts against one target
    draft_ms_by_model: dict[str | None, float] = field(default_factory=dict)

    def for_draft(self, draft_model: str | None) -> CostModel:
        """The same target costs with the draft cost of one draft model (the pooled one when not measured)."""
        draft = self.draft_ms_by_model.get(draft_model)
        return self.model if draft is None else replace(self.model, draft_ms_per_token=draft)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.model.to_dict(),
            "source": self.source,
            "n_steps": self.n_steps,
            "identified": self.identified,
            "batch_mean": self.batch_mean,
            "r2": self.r2,
        }


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None) -> list[dict]:
    cur = con.execute(sql, params or {})
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def _model(floor: float | None, compute: float | None, mean_y: float, draft: float) -> tuple[CostModel, bool]:
    """CostModel from regression output; a negative or missing slope falls back to a flat verify cost."""
    if floor is None or compute is None:  # a single n * B value: slope not identified
        return CostModel(float(mean_y), 0.0, float(draft)), False
    if compute < 0 or floor <= 0:
        # verify time does not grow with tokens in flight (or the fit is degenerate): a flat cost fits best
        return CostModel(float(mean_y), 0.0, float(draft)), True
    return CostModel(float(floor), float(compute), float(draft)), True


def fitted_costs(con: duckdb.DuckDBPyConnection) -> dict[str, CostFit]:
    """Per deployment: the cost model fitted from timed steps (deployments without draft timings are left out)."""
    out: dict[str, CostFit] = {}
    rows = _rows(con, load_sql("recommend_costs"))
    by_draft: dict[str, dict[str | None, float]] = {}
    for row in rows:
        if row["by_draft"] and row["draft_ms_per_token"] is not None:
            by_draft.setdefault(row["deployment"], {})[row["draft_model"]] = float(row["draft_ms_per_token"])
    for row in rows:
        if row["by_draft"] or row["draft_ms_per_token"] is None or row["verify_ms_mean"] is None:
            continue
        model, identified = _model(
            row["floor_ms"], row["compute_ms"], row["verify_ms_mean"], row["draft_ms_per_token"]
        )
        out[row["deployment"]] = CostFit(
            model=model,
            source="fitted",
            n_steps=int(row["n_steps"]),
            identified=identified,
            batch_mean=float(row["batch_mean"] or 1.0),
            r2=None if row["r2"] is None else float(row["r2"]),
            draft_ms_by_model=by_draft.get(row["deployment"], {}),
        )
    return out


def profiled_costs(con: duckdb.DuckDBPyConnection) -> dict[tuple[str | None, str | None], CostFit]:
    """Per (target, draft) pair: the cost model from replay's ``cost_profiles`` (empty when none are stored)."""
    out: dict[tuple[str | None, str | None], CostFit] = {}
    for row in _rows(con, load_sql("recommend_profiles")):
        if row["draft_ms_per_token"] is None:
            continue
        model, identified = _model(
            row["floor_ms"], row["compute_ms"], row["target_ms_mean"], row["draft_ms_per_token"]
        )
        out[(row["target"], row["draft"])] = CostFit(
            model=model, source="profile", n_steps=int(row["n_points"]), identified=identified, batch_mean=1.0
        )
    return out


def deployment_pairs(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[str | None, str | None]]:
    """Most common (target_model, draft_model) of each deployment's speculative requests."""
    sql = """
        select deployment, arg_max(target_model, n) as target, arg_max(draft_model, n) as draft
        from (select deployment, target_model, draft_model, count(*) as n
              from requests where coalesce(tau, 1) > 0 group by all)
        group by deployment
    """
    return {r["deployment"]: (r["target"], r["draft"]) for r in _rows(con, sql)}


def all_cost_fits(con: duckdb.DuckDBPyConnection) -> dict[str, CostFit]:
    """Per deployment, the best available cost fit: replay's profile of its model pair, else the step fit."""
    fitted = fitted_costs(con)
    profiles = profiled_costs(con)
    out = dict(fitted)
    if profiles:
        for deployment, pair in deployment_pairs(con).items():
            profile = profiles.get(pair)
            if profile is not None:
                batch = fitted[deployment].batch_mean if deployment in fitted else 1.0
                out[deployment] = CostFit(
                    profile.model, "profile", profile.n_steps, profile.identified, batch
                )
    return out


def fit_costs(con: duckdb.DuckDBPyConnection, deployment: str) -> CostFit | None:
    """The best available cost fit for one deployment (None without draft and verify timings)."""
    return all_cost_fits(con).get(deployment)


def fit_cost_model(con: duckdb.DuckDBPyConnection, deployment: str) -> CostModel | None:
    """CostModel for a deployment (profiled when replay stored one, else fitted from steps); None without timings."""
    fit = fit_costs(con, deployment)
    return fit.model if fit else None
