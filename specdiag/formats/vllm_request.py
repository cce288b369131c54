"""vLLM per-request speculative-decoding metrics: one response JSON object per line (vLLM 0.29+, when enabled).

`{"id": "cmpl-1", "created": 1784548800, "model": "m", "usage": {...}, "metrics": {"speculative_decoding":
{"mean_acceptance_length": 2.5, "draft_acceptance_rate": 0.5, "acceptance_histogram": [1, 0, 1],
"num_spec_steps": 2, "num_accepted_draft_tokens": 2, "num_draft_tokens": 4, "num_spec_tokens": 2}}}`

Counts are stored as printed; `acceptance_histogram[i]` = steps with exactly i accepted, so
accepted_per_position[i] = sum of histogram[j] for j > i. A histogram that disagrees with the printed counts is
rejected. Lines without the object (speculation off, other responses) are other lines.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from specdiag.formats import Line, ParseContext, Parsed
from specdiag.formats._envelope import deployment_for
from specdiag.formats._json import (
    INT32_MAX,
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

NAME = "vllm-request"


def detect(head: list[str]) -> bool:
    return any(line.lstrip().startswith("{") and '"speculative_decoding"' in line for line in head)


def parse(lines: Iterable[Line], ctx: ParseContext) -> Parsed:
    return parse_records(lines, NAME, _spec, lambda record, part, number: _row(record, part, ctx, number))


def _spec(record: Any) -> dict[str, Any] | None:
    if not isinstance(record, dict):
        return None
    metrics = record.get("metrics")
    spec = metrics.get("speculative_decoding") if isinstance(metrics, dict) else None
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise Bad("wrong_type", "metrics.speculative_decoding must be an object")
    return spec


def _row(record: dict[str, Any], spec: dict[str, Any], ctx: ParseContext, line: int) -> dict[str, Any]:
    request_id = record.get("id")
    if not isinstance(request_id, str) or not request_id:
        raise Bad("missing_field", "id (the request id) is missing")
    steps = count(spec, "num_spec_steps")
    drafted = count(spec, "num_draft_tokens")
    accepted = count(spec, "num_accepted_draft_tokens")
    hist = histogram(spec.get("acceptance_histogram"), "acceptance_histogram")
    check_counts(drafted, accepted, steps, hist)
    usage = record.get("usage") if isinstance(record.get("usage"), dict) else {}
    model = record.get("model") if isinstance(record.get("model"), str) else None
    extra: dict[str, Any] = {
        name: spec[name]
        for name in (
            "mean_acceptance_length",
            "draft_acceptance_rate",
            "per_step_accepted",
            "per_step_drafted",
        )
        if name in spec
    }
    for name in ("mean_acceptance_length", "draft_acceptance_rate"):
        ratio(spec, name)  # type check only
    other_metrics = {k: v for k, v in record["metrics"].items() if k != "speculative_decoding"}
    if other_metrics:
        extra["metrics"] = other_metrics  # the response's other request metrics, verbatim
    return request_row(
        request_id=request_id,
        source=NAME,
        ts=to_time(record.get("created"), "created"),
        deployment=deployment_for(ctx, model),
        target_model=model,
        tau=count(spec, "num_spec_tokens", most=INT32_MAX),
        prompt_tokens=count(usage, "prompt_tokens"),  # type: ignore[arg-type]
        output_tokens=count(usage, "completion_tokens"),  # type: ignore[arg-type]
        verify_steps=steps if steps is not None else (sum(hist) if hist is not None else None),
        drafted=drafted,
        accepted=accepted if accepted is not None else (_accepted(hist)),
        accepted_per_position=reached(hist) if hist is not None else None,
        acceptance_histogram=hist,
        extra=extra,
        line=line,
    )


def _accepted(hist: list[int] | None) -> int | None:
    return None if hist is None else sum(i * n for i, n in enumerate(hist))
