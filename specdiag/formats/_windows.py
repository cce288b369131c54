"""Window rows, and windows from cumulative counters by differencing consecutive samples.

A window holds counts for one interval: ``verify_steps`` (verify steps that had drafts), ``drafted``,
``accepted`` (bonus token excluded) and ``accepted_per_position[i]`` (steps whose accepted count reached i+1).
Its mean acceptance length is computed from the counts: MAL = 1 + accepted / verify_steps.

Cumulative sources (Prometheus counters, vLLM V0 log lines) are stored as samples (``counter_samples`` table) and
turned into windows per series (source, deployment, engine, instance) in time order:

* the first sample of a series is a window "since process start" (start_ts null): counters start at 0;
* each later sample gives ``value - previous value`` for the interval (previous ts, ts];
* a counter that went down means the process restarted: the window holds the new value (counts since the
  restart), flagged ``"reset": true`` in ``extra``, like PromQL's ``increase()``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

WINDOW_COLUMNS = (
    "source",
    "deployment",
    "engine",
    "start_ts",
    "end_ts",
    "tau",
    "verify_steps",
    "drafted",
    "accepted",
    "accepted_per_position",
    "mean_acceptance_length",
    "printed_mean_acceptance_length",
    "printed_acceptance_rate",
    "printed_per_position",
    "throughput_tokens_s",
    "running_requests",
    "draft_ms_per_token",
    "scoring_ms",
    "verification_ms",
    "extra",
    "instance",
    "from_samples",
    "line",
)

SAMPLE_COLUMNS = (
    "source",
    "deployment",
    "engine",
    "instance",
    "ts",
    "tau",
    "verify_steps",
    "drafted",
    "accepted",
    "accepted_per_position",
    "window_fields",
    "line",
)

# counters that are differenced; `window_fields` holds the non-cumulative fields copied to the window (gauges, ratios)
COUNTERS = ("verify_steps", "drafted", "accepted")


def mal(accepted: float | None, verify_steps: float | None) -> float | None:
    """Mean acceptance length = 1 + accepted / verify_steps (tokens per verify step, bonus included)."""
    if accepted is None or not verify_steps:
        return None
    return 1.0 + accepted / verify_steps


def window(**values: Any) -> dict[str, Any]:
    """A complete windows row: unknown keys are an error, missing ones are null, extra becomes JSON text."""
    unknown = set(values) - set(WINDOW_COLUMNS)
    if unknown:
        raise KeyError(f"not a windows column: {sorted(unknown)}")
    row = {name: values.get(name) for name in WINDOW_COLUMNS}
    row["from_samples"] = bool(row["from_samples"])
    if row["mean_acceptance_length"] is None:
        row["mean_acceptance_length"] = mal(row["accepted"], row["verify_steps"])
        if row["mean_acceptance_length"] is None and row["verify_steps"] is None:
            row["mean_acceptance_length"] = row["printed_mean_acceptance_length"]
    if isinstance(row["extra"], dict):
        row["extra"] = json.dumps(row["extra"], sort_keys=True) if row["extra"] else None
    return row


def sample(**values: Any) -> dict[str, Any]:
    unknown = set(values) - set(SAMPLE_COLUMNS)
    if unknown:
        raise KeyError(f"not a counter_samples column: {sorted(unknown)}")
    row = {name: values.get(name) for name in SAMPLE_COLUMNS}
    row["window_fields"] = json.dumps(row["window_fields"] or {}, sort_keys=True, default=str)
    return row


def series_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["source"], row["deployment"], row["engine"], row["instance"])


def _delta(now: float | None, before: float | None, whole: bool) -> float | None:
    """now - before; the whole value since start or since a reset; None when either side is unknown."""
    if now is None:
        return None
    if whole:
        return now
    return None if before is None else now - before


def _went_down(now: dict[str, Any], before: dict[str, Any]) -> bool:
    for name in COUNTERS:
        if now[name] is not None and before[name] is not None and now[name] < before[name]:
            return True
    now_pos, before_pos = now["accepted_per_position"] or [], before["accepted_per_position"] or []
    # a position may be missing (None) from one scrape
    return any(a < b for a, b in zip(now_pos, before_pos, strict=False) if a is not None and b is not None)


def difference(samples: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Windows from cumulative samples (rows as made by :func:`sample`), per series in time order."""
    return [row for _, row in difference_pairs(samples)]


def difference_pairs(samples: Iterable[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(sample, window ending at that sample) for every sample."""
    by_series: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in samples:
        by_series.setdefault(series_key(row), []).append(row)
    pairs = []
    for rows in by_series.values():
        rows.sort(key=lambda r: (r["ts"], r["line"] or 0))
        before: dict[str, Any] | None = None
        for now in rows:
            pairs.append((now, _window_between(before, now)))
            before = now
    return pairs


def _window_between(before: dict[str, Any] | None, now: dict[str, Any]) -> dict[str, Any]:
    reset = before is not None and _went_down(now, before)
    whole = before is None or reset
    base = before or {name: None for name in SAMPLE_COLUMNS}
    counts = {name: _delta(now[name], base[name], whole) for name in COUNTERS}
    per_position = None
    if now["accepted_per_position"] is not None:
        previous = base["accepted_per_position"] or []
        per_position = [
            _delta(value, previous[i] if i < len(previous) else None, whole)
            for i, value in enumerate(now["accepted_per_position"])
        ]
    raw = now["window_fields"]
    fields = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
    extra = dict(fields.pop("extra", None) or {})
    if before is None:
        extra["since_start"] = True
    if reset:
        extra["reset"] = True
    for name in COUNTERS:  # derived counts stay integers where the counters are
        value = counts[name]
        if name != "verify_steps" and value is not None:
            counts[name] = round(value)
    return window(
        source=now["source"],
        deployment=now["deployment"],
        engine=now["engine"],
        instance=now["instance"],
        from_samples=True,
        start_ts=None if before is None else _as_datetime(before["ts"]),
        end_ts=_as_datetime(now["ts"]),
        tau=now["tau"],
        accepted_per_position=per_position,
        extra=extra,
        line=now["line"],
        **counts,
        **fields,
    )


def _as_datetime(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
