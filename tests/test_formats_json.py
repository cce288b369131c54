"""vLLM per-request metrics and TensorRT-LLM iteration stats (JSON)."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from specdiag.formats import trtllm_iterations, vllm_request
from tests.formats_helpers import accounted, ctx, fixture


def test_vllm_request_metrics() -> None:
    lines = fixture("vllm-requests.jsonl")
    parsed = vllm_request.parse(lines, ctx("vllm-requests.jsonl"))
    assert accounted(parsed, lines)
    # a response without the object and an HTTP access line are other lines
    assert (parsed.used_lines, parsed.blank, parsed.other_lines) == (2, 1, 2)
    assert [(r.line, r.reason) for r in parsed.rejects] == [(5, "accepted_gt_drafted"), (6, "invalid_json")]
    a, c = parsed.requests
    assert (a["request_id"], a["deployment"], a["tau"]) == (
        "cmpl-a",
        "llama-8b",
        3,
    )  # model name as deployment
    assert a["ts"] == datetime(2026, 7, 20, 12, 0)  # created = 1784548800 s
    assert (a["verify_steps"], a["drafted"], a["accepted"]) == (4, 12, 6)
    assert a["acceptance_histogram"] == [1, 1, 1, 1]
    # histogram as a dict {"0": 1, "3": 2} -> [1, 0, 0, 2]; reached i+1: [0+0+2, 0+2, 2] = [2, 2, 2]
    assert c["acceptance_histogram"] == [1, 0, 0, 2]
    assert c["accepted_per_position"] == [2, 2, 2]
    assert json.loads(c["extra"])["per_step_accepted"] == [3, 0, 3]


def test_vllm_request_histogram_must_agree_with_counts() -> None:
    from tests.formats_helpers import lines_of

    record = {
        "id": "x",
        "created": 0,
        "metrics": {"speculative_decoding": {"acceptance_histogram": [1, 1], "num_spec_steps": 2}},
    }
    record["metrics"]["speculative_decoding"]["num_accepted_draft_tokens"] = (
        2  # histogram holds 0*1 + 1*1 = 1
    )
    parsed = vllm_request.parse(lines_of(json.dumps(record).encode()), ctx("x.jsonl"))
    assert [r.reason for r in parsed.rejects] == ["out_of_range"]
    assert "holds 1 accepted, not 2" in parsed.rejects[0].detail


def test_trtllm_iteration_array_pretty_printed() -> None:
    lines = fixture("trtllm-iterations.json")
    parsed = trtllm_iterations.parse(lines, ctx("trtllm-iterations.json"))
    assert accounted(parsed, lines) and parsed.used_lines == len(lines)
    assert len(parsed.windows) == 2  # the third iteration drafted nothing
    first, second = parsed.windows
    # numRequestsWithDraftTokens = 8 verify steps; MAL = 1 + 15 / 8 = 2.875 (printed 2.88)
    assert (first["verify_steps"], first["drafted"], first["accepted"]) == (8, 24, 15)
    assert first["mean_acceptance_length"] == pytest.approx(2.875)
    assert first["printed_mean_acceptance_length"] == 2.88
    assert first["end_ts"] == datetime(2026, 7, 20, 10, 11, 12, 123456)
    assert json.loads(first["extra"])["draft_latency_ms"] == 4.2
    assert second["running_requests"] == 6


def test_trtllm_iterations_one_record_per_line() -> None:
    lines = fixture("trtllm-iterations.jsonl")
    parsed = trtllm_iterations.parse(lines, ctx("trtllm-iterations.jsonl"))
    assert accounted(parsed, lines)
    assert [w["accepted"] for w in parsed.windows] == [6, 8]  # both iterations of the first line's array
    assert [(r.line, r.reason) for r in parsed.rejects] == [(2, "accepted_gt_drafted"), (3, "invalid_json")]
