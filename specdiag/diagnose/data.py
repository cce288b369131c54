"""Run diagnose's queries (queries/diagnose_*.sql) and hand their rows over as polars frames.

The heavy lifting (one pass over requests, and over steps only for requests stored without totals) happens in
DuckDB; Python sees one row per (segment, hour) or per (deployment, batch bucket, tau), a few thousand rows even for
fleets of millions of requests.
"""

from __future__ import annotations

from typing import Any

import duckdb
import polars as pl

from specdiag.errors import StoreError
from specdiag.resources import queries_dir

# Segment dimensions diagnose compares, and the per-request columns flag may filter on: an allow-list, since these
# names are placed in SQL text (their values never are: they are bound parameters).
DIMENSIONS = (
    "task",
    "target_model",
    "draft_model",
    "temperature_bucket",
    "batch_bucket",
    "prompt_length_bucket",
)
FILTER_COLUMNS = frozenset(DIMENSIONS) | {"tau"}
SESSION_VARIABLES = frozenset({"deployment"})


def query_text(name: str) -> str:
    path = queries_dir() / f"{name}.sql"
    return path.read_text(encoding="utf-8")


def frame(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    params: dict[str, Any] | None = None,
    variables: dict[str, str] | None = None,
) -> pl.DataFrame:
    """Rows of ``sql`` (values bound from ``params``) as a polars frame.

    Runs on a fresh cursor: DuckDB refuses ``sql()`` on a connection with an unfetched ``execute()`` result. Session
    ``variables`` (read by the query with ``getvariable``) are set on that cursor first, their values bound.
    """
    cur = con.cursor()
    for name, value in (variables or {}).items():
        if name not in SESSION_VARIABLES:
            raise ValueError(f"unknown session variable {name!r}")
        cur.execute(f"set variable {name} = cast($value as varchar)", {"value": value})
    out = pl.from_arrow(cur.sql(sql, params=params or None).to_arrow_table())
    assert isinstance(out, pl.DataFrame)
    return out


def run_query(
    con: duckdb.DuckDBPyConnection, name: str, params: dict[str, Any] | None = None
) -> pl.DataFrame:
    try:
        return frame(con, query_text(name), params)
    except duckdb.CatalogException as exc:
        raise StoreError(
            f"query {name}: {str(exc).splitlines()[0]}",
            hint="is this a specdiag database? run `specdiag ingest`",
        ) from exc


def segments(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Per (deployment, dimension, value, hour) sufficient statistics of speculative traffic."""
    return run_query(con, "diagnose_segments")


def window_segments(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Per (deployment, tau, hour) acceptance sums from engine windows, for deployments without request rows; the
    shape of ``segments`` (dimension 'deployment', one stratum) plus the windows' ``source``."""
    return run_query(con, "diagnose_windows")


def config(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Per (deployment, task, setting, value): first_seen, last_seen, n."""
    return run_query(con, "diagnose_config")


def costs(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Per (deployment, batch_bucket, tau) sums and the deployment's verify-cost fit."""
    return run_query(con, "diagnose_costs")
