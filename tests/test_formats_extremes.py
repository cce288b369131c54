"""Values at the edges of what a number or a date can hold, in every engine format: one reject line each (or a
stored row), never an exception out of ingest. Each case crashed ingest before (found by fuzzing)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from specdiag.ingest import ingest_paths

BIG = 10**400  # a 401-digit integer: math.isfinite and float() raise OverflowError on it
PROM = (
    "# TYPE vllm:spec_decode_num_drafts_total counter\n"
    'vllm:spec_decode_num_drafts_total{{model_name="m",engine="0"}} {drafts} 1794787500000\n'
    'vllm:spec_decode_num_draft_tokens_total{{model_name="m",engine="0"}} 300 1794787500000\n'
    'vllm:spec_decode_num_accepted_tokens_total{{model_name="m",engine="0"}} 100 1794787500000\n'
    'vllm:spec_decode_num_accepted_tokens_per_pos_total{{model_name="m",engine="0",position="0"}} 60 1794787500000\n'
    'vllm:spec_decode_num_accepted_tokens_per_pos_total{{model_name="m",engine="0",position="1"}} {pos1} '
    "1794787500000\n"
    'vllm:spec_decode_num_drafts_total{{model_name="m",engine="0"}} 200 1794787800000\n'
    'vllm:spec_decode_num_draft_tokens_total{{model_name="m",engine="0"}} 600 1794787800000\n'
    'vllm:spec_decode_num_accepted_tokens_total{{model_name="m",engine="0"}} 200 1794787800000\n'
    'vllm:spec_decode_num_accepted_tokens_per_pos_total{{model_name="m",engine="0",position="0"}} 120 1794787800000\n'
)


def vllm_request(usage: int = 1, tau: int = 3, created: Any = 1784542274) -> str:
    return json.dumps({
        "id": "cmpl-1", "created": created, "model": "m", "usage": {"prompt_tokens": 3, "completion_tokens": usage},
        "metrics": {"speculative_decoding": {"num_spec_steps": 2, "num_draft_tokens": 6,
                                             "num_accepted_draft_tokens": 3, "num_spec_tokens": tau}},
    })  # fmt: skip


def sglang_request(timestamp: str = "2026-07-20T10:11:13", verify: Any = 4, latency: Any = 0.25) -> str:
    meta = {"prompt_tokens": 8, "completion_tokens": 10, "e2e_latency": latency, "spec_verify_ct": verify,
            "spec_num_correct_drafts": 6, "spec_num_proposed_drafts": 12}  # fmt: skip
    return json.dumps({"timestamp": timestamp, "event": "request.finished", "rid": "r1", "obj": {"text": "hi"},
                       "out": {"text": "x", "meta_info": meta}})  # fmt: skip


VLLM_LINE = (
    "INFO 11-16 00:00:30 [metrics.py:96] SpecDecoding metrics: Mean acceptance length: 2.00, Accepted: 100 tokens, "
    "Drafted: {drafted} tokens, Per-position acceptance rate: 0.600, 0.400\n"
)
SGLANG_LINE = (
    "[{date} TP0] Decode batch, #running-req: 24, #token: 18342, token usage: 0.09, accept len: 2.87, "
    "accept rate: 0.62, cuda graph: True, gen throughput (token/s): 1843.52, #queue-req: 0\n"
)

CASES = {
    # name: (text, ingest options, rejected lines)
    "prometheus, a position missing from a scrape": (
        PROM.format(drafts=100, pos1=30).replace('position="1"}} 30', 'position="9"}} 30'),
        {},
        0,
    ),  # fmt: skip
    "prometheus, a position NaN": (PROM.format(drafts=100, pos1="NaN"), {}, 0),
    "prometheus, a counter past 2^63": (PROM.format(drafts="1e+19", pos1=30), {}, 1),
    "vllm-request, a count of 2^64": (vllm_request(usage=2**64), {}, 1),
    "vllm-request, a count of 2^63": (vllm_request(usage=2**63), {}, 1),
    "vllm-request, tau of 2^40": (vllm_request(tau=2**40), {}, 1),
    "vllm-request, a 401-digit created time": (vllm_request(created=BIG), {}, 1),
    "sglang-request, a 401-digit count": (sglang_request(verify=BIG), {}, 1),
    "sglang-request, a 401-digit latency": (
        sglang_request(latency=BIG),
        {},
        0,
    ),  # a ratio: unusable, left null
    "sglang-request, 9999-12-31 at -12:00": (sglang_request(timestamp="9999-12-31T23:59:59-12:00"), {}, 1),
    "sglang-request, year 1 minus the latency": (sglang_request(timestamp="0001-01-01T00:00:00"), {}, 1),
    "vllm-log, a count of 23 digits": (VLLM_LINE.format(drafted="9" * 23), {"year": 2026}, 1),
    "sglang-log, 9999-12-31 west of UTC": (
        SGLANG_LINE.format(date="9999-12-31 23:00:00"),
        {"tz": "America/New_York"},
        1,
    ),
    "sglang-log, 0001-01-01 east of UTC": (
        SGLANG_LINE.format(date="0001-01-01 01:00:00"),
        {"tz": "Asia/Tokyo"},
        1,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_extreme_values_are_rejects_or_rows_never_crashes(tmp_path: Path, name: str) -> None:
    text, options, rejected = CASES[name]
    f = tmp_path / "in.log"
    f.write_text(text if text.endswith("\n") else text + "\n")
    db = tmp_path / "x.duckdb"
    stats = ingest_paths([str(f)], db=str(db), progress=False, **options)
    assert stats.rejected == rejected
    assert (
        stats.lines
        == stats.stored_lines + stats.duplicates + stats.blank + stats.rejected + stats.other_lines
    )
    con = duckdb.connect(str(db), read_only=True)
    reasons = {r for (r,) in con.execute("select reason from rejects").fetchall()}
    con.close()
    assert reasons <= {"out_of_range", "bad_timestamp", "unparsable_metrics"}
