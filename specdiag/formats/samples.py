"""Store cumulative counter samples and rebuild the windows differenced from them.

``specdiag.ingest`` calls :func:`write_samples` with ``Parsed.samples`` inside the file's transaction. Windows of
every touched series are recomputed from all stored samples of that series, so scrapes saved as separate files
(or ingested in separate runs, in any order) difference against each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb

from specdiag.formats._windows import SAMPLE_COLUMNS, WINDOW_COLUMNS, difference_pairs, series_key

_SERIES = (
    "source = ? and deployment = ? and engine is not distinct from ? and instance is not distinct from ?"
)


def write_samples(
    con: duckdb.DuckDBPyConnection, samples: Sequence[dict[str, Any]], file_id: str | None
) -> int:
    """Insert ``samples`` (rows of ``counter_samples``) and rebuild their series' windows.

    Returns the number of windows the touched series now have minus the number they had before (the windows
    this file added).
    """
    if not samples:
        return 0
    columns = (*SAMPLE_COLUMNS, "file_id")
    con.executemany(
        f"insert into counter_samples ({', '.join(columns)}) values ({', '.join('?' * len(columns))})",
        [[row[name] for name in SAMPLE_COLUMNS] + [file_id] for row in samples],
    )
    added = 0
    for key in sorted({series_key(row) for row in samples}, key=repr):
        added += rebuild_series(con, key)
    return added


def rebuild_series(con: duckdb.DuckDBPyConnection, key: tuple[Any, ...]) -> int:
    before = con.execute(
        f"select count(*) from windows where from_samples and {_SERIES}", list(key)
    ).fetchone()
    con.execute(f"delete from windows where from_samples and {_SERIES}", list(key))
    cursor = con.execute(
        f"select {', '.join(SAMPLE_COLUMNS)}, file_id from counter_samples where {_SERIES}", list(key)
    )
    names = [d[0] for d in cursor.description]
    stored = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
    columns = (*WINDOW_COLUMNS, "file_id")
    values = [
        [row[name] for name in WINDOW_COLUMNS] + [sample["file_id"]]
        for sample, row in difference_pairs(stored)
    ]
    if values:
        con.executemany(
            f"insert into windows ({', '.join(columns)}) values ({', '.join('?' * len(columns))})", values
        )
    return len(values) - int(before[0] if before else 0)
