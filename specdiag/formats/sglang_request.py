"""SGLang request logs in JSON mode (`--log-requests`): one `request.finished` event per line.

`{"timestamp": "2026-07-20T10:11:12.5", "event": "request.finished", "rid": "a1", "obj": {...}, "out": {"text":
"...", "meta_info": {"prompt_tokens": 12, "completion_tokens": 40, "spec_verify_ct": 16, "spec_accept_length": 2.5,
"spec_accept_rate": 0.5, "spec_num_correct_drafts": 24, "spec_num_proposed_drafts": 48,
"spec_correct_drafts_histogram": [4, 4, 4, 4]}}}`

SGLang prints no tau: ``tau`` is the drafts proposed per verify step when that is a whole number (``_tau``).

Field names by version: counts as `spec_num_correct_drafts` / `spec_num_proposed_drafts` (with
`spec_correct_drafts_histogram`), or `spec_accept_token_num` / `spec_draft_token_num`; `spec_verify_ct` is the
number of verify steps. Releases that print only `spec_accept_length` keep it in `extra` with null counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from specdiag.formats import Line, ParseContext, Parsed
from specdiag.formats._envelope import deployment_for
from specdiag.formats._json import (
    Bad,
    check_counts,
    count,
    histogram,
    parse_records,
    ratio,
    reached,
    request_row,
)
from specdiag.formats._json import timestamp as to_time

NAME = "sglang-request"
ACCEPTED = ("spec_num_correct_drafts", "spec_accept_token_num")
DRAFTED = ("spec_num_proposed_drafts", "spec_draft_token_num")


def detect(head: list[str]) -> bool:
    return any(line.lstrip().startswith("{") and '"meta_info"' in line and '"rid"' in line for line in head)


def parse(lines: Iterable[Line], ctx: ParseContext) -> Parsed:
    return parse_records(lines, NAME, _meta, lambda record, part, number: _row(record, part, ctx, number))


def _meta(record: Any) -> dict[str, Any] | None:
    if not isinstance(record, dict) or record.get("event", "request.finished") != "request.finished":
        return None
    out = record.get("out")
    meta = out.get("meta_info") if isinstance(out, dict) else None
    if not isinstance(meta, dict) or not any(str(name).startswith("spec_") for name in meta):
        return None
    return meta


def _first(meta: dict[str, Any], names: tuple[str, ...]) -> int | None:
    for name in names:
        if meta.get(name) is not None:
            return count(meta, name)
    return None


def _row(record: dict[str, Any], meta: dict[str, Any], ctx: ParseContext, line: int) -> dict[str, Any]:
    rid = record.get("rid", meta.get("id"))
    if not isinstance(rid, str) or not rid:
        raise Bad("missing_field", "rid (the request id) is missing")
    steps = count(meta, "spec_verify_ct")
    accepted, drafted = _first(meta, ACCEPTED), _first(meta, DRAFTED)
    hist = histogram(meta.get("spec_correct_drafts_histogram"), "spec_correct_drafts_histogram")
    check_counts(drafted, accepted, steps, hist)
    for name in ("spec_accept_length", "spec_accept_rate"):
        ratio(meta, name)  # type check only; kept in extra as printed
    extra = {name: value for name, value in meta.items() if str(name).startswith("spec_")}
    for name in ("spec_verify_ct", "spec_correct_drafts_histogram", *ACCEPTED, *DRAFTED):
        extra.pop(name, None)
    obj = record.get("obj") if isinstance(record.get("obj"), dict) else {}
    params = obj.get("sampling_params") if isinstance(obj.get("sampling_params"), dict) else {}  # type: ignore[union-attr]
    prompt = obj.get("text") if isinstance(obj.get("text"), str) else None  # type: ignore[union-attr]
    output = record["out"].get("text") if isinstance(record["out"].get("text"), str) else None
    finished = to_time(record.get("timestamp"), "timestamp")  # the event is logged when the request finishes
    latency_ms = _ms(meta.get("e2e_latency"))
    try:
        arrival = finished - timedelta(milliseconds=latency_ms or 0.0)  # arrival = finish time - e2e latency
    except OverflowError as exc:
        raise Bad("bad_timestamp", f"timestamp {finished} minus e2e_latency is before year 1") from exc
    return request_row(
        request_id=rid,
        source=NAME,
        ts=arrival,
        deployment=deployment_for(ctx, meta.get("model") if isinstance(meta.get("model"), str) else None),
        temperature=ratio(params, "temperature"),  # type: ignore[arg-type]
        top_p=ratio(params, "top_p"),  # type: ignore[arg-type]
        prompt=prompt,
        output=output,
        prompt_chars=len(prompt) if prompt is not None else None,
        output_chars=len(output) if output is not None else None,
        prompt_tokens=count(meta, "prompt_tokens"),
        output_tokens=count(meta, "completion_tokens"),
        latency_ms=latency_ms,
        tau=_tau(drafted, steps),
        verify_steps=steps,
        drafted=drafted,
        accepted=accepted,
        accepted_per_position=reached(hist) if hist is not None else None,
        acceptance_histogram=hist,
        extra=extra,
        line=line,
    )


def _tau(drafted: int | None, steps: int | None) -> int | None:
    """SGLang prints no tau: drafts proposed per verify step when every step proposed the same whole number (drafted
    = steps x tau), else None. Without it the request would read as tau = 0 control traffic."""
    if not drafted or not steps or drafted % steps:
        return None
    return drafted // steps


def _ms(seconds: Any) -> float | None:
    """`e2e_latency` (s) in ms; None when absent or not a finite, non-negative number."""
    ok = isinstance(seconds, int | float) and not isinstance(seconds, bool) and 0 <= seconds < 1e9
    return float(seconds) * 1000.0 if ok else None
