"""Fit the forward-pass cost model from the store.

Verify time of a step is modelled as t_verify(n, B) = floor_ms + compute_ms * n * B (see
:class:`specdiag.speedup.CostModel`), with n = drafted + 1 tokens verified per sequence and B the step's batch size.
Least squares over every timed step, tau = 0 control traffic included (drafted = 0: one target token, which pins
the floor). Draft time is per drafted token: sum(draft_ms) / sum(drafted). When replay has stored measured forward
passes (``cost_profiles``) for the deployment's target/draft pair, those are preferred: they are clean measurements.

The same regression has two entry points. ``fitted_costs`` runs it in DuckDB (``queries/recommend_costs.sql``, one
row per deployment back to Python) for callers that need only the fit (explain). ``fit_from_sums`` runs it in numpy
on per-request sufficient statistics (``COST_SUMS``): recommend sums them with bootstrap weights, so that each
replicate refits the costs from its own resampled requests (a matrix product, never the steps again).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import duckdb
import numpy as np

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


# Per-request sufficient statistics of the cost regression, with x = (drafted + 1) * B tokens in flight and y = verify
# ms over the request's timed steps: n = steps, sx = sum x, sxx = sum x^2, sxy = sum x*y, sy = sum y, syy = sum y^2;
# then the draft sums over its speculative timed steps: draft_ms (ms), drafted_timed (tokens whose draft time is
# logged), spec_steps and spec_batch = sum B (for the mean batch size of speculative steps).
COST_SUMS = ("n", "sx", "sxx", "sxy", "sy", "syy", "draft_ms", "drafted_timed", "spec_steps", "spec_batch")


@dataclass(frozen=True)
class CostArrays:
    """Cost models fitted from rows of summed statistics: every field is an (n,) array, NaN where not fitted."""

    floor_ms: np.ndarray
    compute_ms: np.ndarray
    draft_ms_per_token: np.ndarray
    batch_mean: np.ndarray
    identified: np.ndarray  # bool: more than one tokens-in-flight value, so floor and compute are separable
    n_steps: np.ndarray
    r2: np.ndarray


def fit_from_sums(sums: np.ndarray) -> CostArrays:
    """Least squares t_verify = floor_ms + compute_ms * x from summed statistics, one fit per row.

    sums: (n, len(COST_SUMS)), e.g. bootstrap weights (n, requests) @ per-request sums (requests, len(COST_SUMS)).
    compute = cov(x, y) / var(x), floor = mean(y) - compute * mean(x). The rules of ``_model`` apply row by row:
    a single x (var(x) = 0 up to rounding) or a negative slope or floor gives a flat verify cost mean(y).
    Draft ms per token = sum draft_ms / sum drafted_timed; batch_mean = mean B of speculative steps (1 without any).
    """
    sums = np.atleast_2d(np.asarray(sums, dtype=float))
    n, sx, sxx, sxy, sy, syy, draft_ms, drafted, spec_steps, spec_batch = sums.T
    with np.errstate(invalid="ignore", divide="ignore"):
        x_mean, y_mean = sx / n, sy / n
        var_x = sxx / n - x_mean * x_mean
        var_y = syy / n - y_mean * y_mean
        cov = sxy / n - x_mean * y_mean
        identified = (
            var_x > 1e-9 * x_mean * x_mean
        )  # relative: E[x^2] - E[x]^2 of equal x rounds to ~1e-16 E[x]^2
        compute = cov / var_x
        floor = y_mean - compute * x_mean
        sloped = identified & (compute >= 0) & (floor > 0)
        r2 = np.where(identified & (var_y > 0), cov * cov / (var_x * var_y), np.nan)
        draft = np.where(drafted > 0, draft_ms / drafted, np.nan)
        batch = np.where(spec_steps > 0, spec_batch / spec_steps, 1.0)
    return CostArrays(
        floor_ms=np.where(sloped, floor, y_mean),
        compute_ms=np.where(sloped, compute, 0.0),
        draft_ms_per_token=draft,
        batch_mean=batch,
        identified=identified,
        n_steps=n,
        r2=r2,
    )


def fit_from_unit_sums(
    sums: np.ndarray, draft_ms_by_model: dict[str | None, float] | None = None
) -> CostFit | None:
    """The point fit (every request weighted once) from per-request sums (requests, len(COST_SUMS)); None without
    draft and verify timings (or with every verify time 0), like ``fitted_costs``."""
    fit = fit_from_sums(np.asarray(sums, dtype=float).sum(axis=0))
    # every verify time 0 (a timer that never ran): a target pass that costs nothing is no cost model
    if not (fit.n_steps[0] > 0 and np.isfinite(fit.draft_ms_per_token[0]) and fit.floor_ms[0] > 0):
        return None
    r2 = float(fit.r2[0])
    return CostFit(
        model=CostModel(float(fit.floor_ms[0]), float(fit.compute_ms[0]), float(fit.draft_ms_per_token[0])),
        source="fitted",
        n_steps=int(fit.n_steps[0]),
        identified=bool(fit.identified[0]),
        batch_mean=float(fit.batch_mean[0]),
        r2=r2 if np.isfinite(r2) else None,
        draft_ms_by_model=dict(draft_ms_by_model or {}),
    )


def fitted_costs(con: duckdb.DuckDBPyConnection) -> dict[str, CostFit]:
    """Per deployment: the cost model fitted from timed steps (deployments without draft timings are left out)."""
    out: dict[str, CostFit] = {}
    rows = _rows(con, load_sql("recommend_costs"))
    by_draft: dict[str, dict[str | None, float]] = {}
    for row in rows:
        if row["by_draft"] and row["draft_ms_per_token"] is not None:
            by_draft.setdefault(row["deployment"], {})[row["draft_model"]] = float(row["draft_ms_per_token"])
    for row in rows:
        if row["by_draft"] or row["draft_ms_per_token"] is None or not (row["verify_ms_mean"] or 0) > 0:
            continue  # no timings, or every verify time 0: no cost model (as in fit_from_unit_sums)
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


def all_cost_fits(
    con: duckdb.DuckDBPyConnection, fitted: dict[str, CostFit] | None = None
) -> dict[str, CostFit]:
    """Per deployment, the best available cost fit: replay's profile of its model pair, else the step fit
    (``fitted``, when the caller already has it, else ``fitted_costs``)."""
    fitted = fitted_costs(con) if fitted is None else fitted
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
