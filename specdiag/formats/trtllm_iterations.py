"""TensorRT-LLM iteration stats: a JSON array with one object per iteration (the `/metrics` endpoint), or one
array or object per line when polled repeatedly.

`{"timestamp": "07-20-2026 10:11:12.123456", "iter": 120, "iterLatencyMS": 31.5, "numActiveRequests": 8,
"specDecodingStats": {"numDraftTokens": 24, "numAcceptedTokens": 15, "numRequestsWithDraftTokens": 8,
"acceptanceLength": 2.9, "iterLatencyMS": 4.2, "draftOverhead": 0.13}}`

Each iteration with drafts is a window: drafted = numDraftTokens, accepted = numAcceptedTokens, verify_steps =
numRequestsWithDraftTokens (one draft per request per iteration), running_requests = numActiveRequests; the printed
acceptanceLength is kept beside the computed MAL. Times (`MM-DD-YYYY HH:MM:SS.ffffff`) are read like engine logs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from itertools import chain
from typing import Any

from specdiag.formats import Line, ParseContext, Parsed
from specdiag.formats._envelope import Clock, deployment_for
from specdiag.formats._json import Bad, count, ratio, reject
from specdiag.formats._windows import window

NAME = "trtllm-iterations"
SOURCE = "trtllm-iterations"


def detect(head: list[str]) -> bool:
    text = "\n".join(head).lstrip()
    return text[:1] in "[{" and (
        '"specDecodingStats"' in text or ('"iterLatencyMS"' in text and '"iter"' in text)
    )


def parse(lines: Iterable[Line], ctx: ParseContext) -> Parsed:
    out = Parsed(format=NAME)
    clock = Clock(ctx)
    stream = iter(lines)
    head: list[Line] = []
    for line in stream:  # up to the first non-blank line
        head.append(line)
        if line.raw.strip():
            break
    rest: Iterable[Line] = chain(head, stream)
    if head and head[-1].raw.strip() and _json(head[-1].raw) is INVALID:
        # not one JSON value a line: a (pretty-printed) document, read whole
        everything = list(rest)
        if _whole_array(everything, ctx, clock, out):
            return out
        rest = everything
    for line in rest:  # one array or iteration object a line, streamed
        if not line.raw.strip():
            out.blank += 1
            continue
        try:
            value = _json(line.raw)
            if value is INVALID:
                raise Bad("invalid_json", "invalid JSON")
            items = value if isinstance(value, list) else [value]
            found = [_window(item, ctx, clock, line.number) for item in items]
        except Bad as bad:
            out.rejects.append(reject(line, bad))
            continue
        kept = [row for row in found if row is not None]
        out.windows.extend(kept)
        if kept:
            out.used_lines += 1
        else:
            out.other_lines += 1
    return out


INVALID = object()  # what _json returns for text that is not JSON


def _json(raw: bytes) -> Any:
    """The JSON value of ``raw``, or INVALID."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, integers of 4300+ digits
        return INVALID


def _whole_array(lines: list[Line], ctx: ParseContext, clock: Clock, out: Parsed) -> bool:
    """A file that is one JSON array: one window per iteration; every line stored when any window is."""
    value = _json(b"\n".join(line.raw for line in lines))
    if not isinstance(value, list):
        return False
    content = [line for line in lines if line.raw.strip()]
    out.blank += len(lines) - len(content)
    windows = _windows(value, ctx, clock, content[0].number, out)
    out.windows.extend(windows)
    if windows:
        out.used_lines += len(content)
    else:
        out.other_lines += len(content)
    return True


def _windows(
    items: list[Any], ctx: ParseContext, clock: Clock, line: int, out: Parsed
) -> list[dict[str, Any]]:
    rows = []
    for index, item in enumerate(items):
        try:
            row = _window(item, ctx, clock, line)
        except Bad as bad:
            out.notes.append(f"iteration {index} skipped ({bad.reason}: {bad})")
            continue
        if row is not None:
            rows.append(row)
    return rows


def _window(item: Any, ctx: ParseContext, clock: Clock, line: int) -> dict[str, Any] | None:
    if not isinstance(item, dict):
        raise Bad("not_object", "an iteration must be a JSON object")
    stats = item.get("specDecodingStats")
    if stats is None:
        return None
    if not isinstance(stats, dict):
        raise Bad("wrong_type", "specDecodingStats must be an object")
    drafted, accepted = count(stats, "numDraftTokens"), count(stats, "numAcceptedTokens")
    steps = count(stats, "numRequestsWithDraftTokens")
    if not drafted:
        return None  # an iteration without drafts
    if accepted is not None and accepted > drafted:
        raise Bad("accepted_gt_drafted", f"numAcceptedTokens {accepted} > numDraftTokens {drafted}")
    extra = {
        "iter": item.get("iter"),
        "iter_latency_ms": ratio(item, "iterLatencyMS"),
        "draft_latency_ms": ratio(stats, "iterLatencyMS"),
        "draft_overhead": ratio(stats, "draftOverhead"),
    }
    return window(
        source=SOURCE,
        deployment=deployment_for(ctx),
        end_ts=_time(item.get("timestamp"), clock),
        verify_steps=steps or None,
        drafted=drafted,
        accepted=accepted,
        printed_mean_acceptance_length=ratio(stats, "acceptanceLength"),
        running_requests=count(item, "numActiveRequests"),
        extra={k: v for k, v in extra.items() if v is not None},
        line=line,
    )


def _time(value: Any, clock: Clock) -> datetime:
    """`MM-DD-YYYY HH:MM:SS.ffffff` (local time, like the engine logs)."""
    if not isinstance(value, str):
        raise Bad("bad_timestamp", "timestamp is missing")
    try:
        local = datetime.strptime(
            value.strip(), "%m-%d-%Y %H:%M:%S.%f" if "." in value else "%m-%d-%Y %H:%M:%S"
        )
    except ValueError as exc:
        raise Bad("bad_timestamp", f"timestamp {value!r} is not MM-DD-YYYY HH:MM:SS.ffffff") from exc
    try:
        return clock.to_utc(local)
    except ValueError as exc:  # out of range in UTC
        raise Bad("bad_timestamp", str(exc)) from exc
