"""Configuration changes that coincide with a change point (queries/diagnose_config.sql)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import polars as pl

# Settings whose change can explain an acceptance change.
SETTINGS = ("draft_model", "target_model", "tau", "temperature", "acceptance")
# A change "coincides" when its first request is within this distance of the split hour's boundaries.
TOLERANCE = timedelta(hours=1)


def coinciding(
    cfg: pl.DataFrame,
    deployment: str,
    segment: dict[str, str],
    split: datetime,
    start: datetime | None = None,
) -> list[dict[str, Any]]:
    """Values first seen within TOLERANCE of ``split`` that were not in use from the series' start.

    ``segment`` restricts to one task when the segment is a task; other dimensions look at the whole deployment.
    Returns [{"setting", "before", "after", "at"}], earliest first.
    """
    rows = cfg.filter(pl.col("deployment") == deployment)
    if "task" in segment:
        rows = rows.filter(pl.col("task") == segment["task"])
    if rows.is_empty():
        return []
    # a value's span over the tasks in scope
    spans = rows.group_by(["setting", "value"]).agg(
        pl.col("first_seen").min(), pl.col("last_seen").max(), pl.col("n").sum()
    )
    origin = start or spans["first_seen"].min()
    changes = []
    for setting in SETTINGS:
        s = spans.filter(pl.col("setting") == setting).sort("first_seen")
        new = s.filter(
            (pl.col("first_seen") > origin)
            & (pl.col("first_seen") >= split - TOLERANCE)
            & (pl.col("first_seen") < split + 2 * TOLERANCE)
        )
        for row in new.iter_rows(named=True):
            older = s.filter(pl.col("first_seen") < row["first_seen"]).sort("n", descending=True)
            before = older["value"][0] if not older.is_empty() else None
            changes.append(
                {"setting": setting, "before": before, "after": row["value"], "at": row["first_seen"]}
            )
    return sorted(changes, key=lambda c: c["at"])
