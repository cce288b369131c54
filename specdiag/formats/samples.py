"""Store cumulative counter samples and rebuild the windows differenced from them.

``specdiag.ingest`` calls :func:`write_samples` with ``Parsed.samples`` inside the file's transaction. The windows
of every touched series are recomputed from the stored samples of that series, from the earliest new sample on,
so scrapes saved as separate files (or ingested in separate runs, in any order) difference against each other.
Rows go in as one Arrow table per statement (``executemany`` costs milliseconds a row).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import duckdb
import polars as pl

from specdiag.formats._windows import SAMPLE_COLUMNS, WINDOW_COLUMNS, difference_pairs, series_key
from specdiag.store import insert_frame, table_columns

_SERIES = (
    "source = ? and deployment = ? and engine is not distinct from ? and instance is not distinct from ?"
)

_TEXT, _FLOAT, _INT, _TIME = pl.Utf8, pl.Float64, pl.Int64, pl.Datetime("us")
_FLOATS = pl.List(pl.Float64)
SAMPLE_SCHEMA: dict[str, Any] = {
    **dict.fromkeys(("source", "deployment", "engine", "instance", "window_fields", "file_id"), _TEXT),
    **dict.fromkeys(("verify_steps", "drafted", "accepted"), _FLOAT),
    "ts": _TIME,
    "tau": _INT,
    "accepted_per_position": _FLOATS,
    "line": _INT,
}
WINDOW_SCHEMA: dict[str, Any] = {
    **dict.fromkeys(("source", "deployment", "engine", "instance", "extra", "file_id"), _TEXT),
    **dict.fromkeys(("start_ts", "end_ts"), _TIME),
    **dict.fromkeys(("tau", "drafted", "accepted", "line"), _INT),
    **dict.fromkeys(("accepted_per_position", "printed_per_position"), _FLOATS),
    "from_samples": pl.Boolean,
}


def insert_rows(
    con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[dict[str, Any]], schema: dict[str, Any]
) -> None:
    """Insert dict rows in one statement; ``table`` is one of this module's fixed table names."""
    if not rows:
        return
    if table not in ("counter_samples", "windows"):
        raise ValueError(f"not a samples table: {table!r}")
    names = list(rows[0])
    columns = table_columns(con, table)
    unknown = [name for name in names if name not in columns]
    if unknown:  # identifiers: only the store's own columns of that table
        raise ValueError(f"unknown {table} columns: {unknown}")
    types = {name: schema.get(name, _FLOAT) for name in names}
    frame = pl.DataFrame(
        [[row[name] for name in names] for row in rows], schema=types, orient="row", strict=False
    )
    insert_frame(con, table, frame, {name: name for name in names})


def write_samples(
    con: duckdb.DuckDBPyConnection, samples: Sequence[dict[str, Any]], file_id: str | None
) -> int:
    """Insert ``samples`` (rows of ``counter_samples``) and rebuild their series' windows.

    Returns the number of windows the touched series gained (the windows this file added).
    """
    if not samples:
        return 0
    insert_rows(con, "counter_samples", [{**row, "file_id": file_id} for row in samples], SAMPLE_SCHEMA)
    earliest: dict[tuple[Any, ...], datetime] = {}
    for row in samples:
        key = series_key(row)
        earliest[key] = min(earliest.get(key, row["ts"]), row["ts"])
    return sum(rebuild_series(con, key, since) for key, since in sorted(earliest.items(), key=repr))


def rebuild_series(con: duckdb.DuckDBPyConnection, key: tuple[Any, ...], since: datetime) -> int:
    """Recompute the windows of one series that end at or after ``since``; returns windows added minus removed.

    The base is the last stored sample before ``since`` (none: the first window is "since process start").
    """
    columns = ", ".join((*SAMPLE_COLUMNS, "file_id"))
    base = _fetch(con, f"select {columns} from counter_samples where {_SERIES} and ts < ? "
                       "order by ts desc, line desc limit 1", [*key, since])  # fmt: skip
    newer = _fetch(con, f"select {columns} from counter_samples where {_SERIES} and ts >= ?", [*key, since])
    removed = con.execute(
        f"delete from windows where from_samples and {_SERIES} and end_ts >= ?", [*key, since]
    ).fetchone()
    pairs = difference_pairs(base + newer)[len(base) :]
    rows = [
        {**{name: row[name] for name in WINDOW_COLUMNS}, "file_id": sample["file_id"]}
        for sample, row in pairs
    ]
    insert_rows(con, "windows", rows, WINDOW_SCHEMA)
    return len(rows) - int(removed[0] if removed else 0)


def _fetch(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description or []]
    return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
