"""SGLang: `Decode batch` log lines in every shape, and JSON request logs with every historical field name."""

from __future__ import annotations

import json
from datetime import datetime

from specdiag.formats import sglang_log, sglang_request
from tests.formats_helpers import accounted, ctx, fixture


def test_decode_batch_lines_in_every_shape() -> None:
    lines = fixture("sglang.log")
    parsed = sglang_log.parse(lines, ctx("sglang.log"))
    assert accounted(parsed, lines)
    # 10 lines: 4 speculative Decode lines, 1 blank, 4 other (server args, prefill, HTTP, a Decode line without
    # `accept len`: no speculation), 1 unparsable (accept len: two)
    assert (parsed.used_lines, parsed.blank, parsed.other_lines) == (4, 1, 4)
    assert [(r.line, r.reason) for r in parsed.rejects] == [(10, "unparsable_metrics")]
    current, dp, late_2025, old = parsed.windows
    assert current["source"] == "sglang-log/2026-04"
    assert current["end_ts"] == datetime(2026, 7, 20, 10, 11, 12)
    assert (current["mean_acceptance_length"], current["printed_acceptance_rate"]) == (2.87, 0.62)
    assert (current["running_requests"], current["throughput_tokens_s"]) == (24, 1843.52)
    # SGLang prints no counts: never invented
    assert (current["verify_steps"], current["drafted"], current["accepted"]) == (None, None, None)
    assert json.loads(current["extra"])["cuda graph"] == "True"
    # ANSI-coloured envelope with milliseconds and DP/TP ranks; extra fields kept
    assert (dp["engine"], dp["instance"]) == ("1", "DP1 TP0")
    assert dp["end_ts"] == datetime(2026, 7, 20, 10, 11, 20, 123000)
    assert json.loads(dp["extra"])["#grammar-queue-req"] == 0
    # before 2026-04 `accept rate` included the bonus token (1.20 here)
    assert late_2025["source"] == "sglang-log/2025-10" and late_2025["printed_acceptance_rate"] == 1.2
    # the oldest shape: full stop after `batch`, no accept rate, trailing comma
    assert old["source"] == "sglang-log/accept-len" and old["mean_acceptance_length"] == 3.12


def test_request_log_field_names_by_version() -> None:
    lines = fixture("sglang-requests.jsonl")
    parsed = sglang_request.parse(lines, ctx("sglang-requests.jsonl"))
    assert accounted(parsed, lines)
    # request.received and a finished request without spec_ fields are other lines; `"three"` is rejected
    assert parsed.other_lines == 2
    assert [(r.line, r.reason) for r in parsed.rejects] == [(5, "wrong_type")]
    r1, r2, r3 = parsed.requests
    # spec_num_correct_drafts / spec_num_proposed_drafts with a histogram [1, 1, 1, 1]:
    # accepted = 0*1 + 1*1 + 2*1 + 3*1 = 6; reached position i+1: [1+1+1, 1+1, 1] = [3, 2, 1]
    assert (r1["request_id"], r1["verify_steps"], r1["drafted"], r1["accepted"]) == ("r1", 4, 12, 6)
    # SGLang prints no tau: 12 drafts over 4 verify steps is 3 a step (else the request read as tau = 0 control)
    assert (r1["tau"], r2["tau"], r3["tau"]) == (3, 3, None)
    assert r1["accepted_per_position"] == [3, 2, 1]
    assert (r1["temperature"], r1["latency_ms"], r1["output_tokens"]) == (0.0, 250.0, 10)
    assert r1["ts"] == datetime(2026, 7, 20, 10, 11, 12, 750000)  # finished 10:11:13 - e2e_latency 0.25 s
    # spec_accept_token_num / spec_draft_token_num; epoch-seconds timestamp; the prompt text kept verbatim
    assert (r2["verify_steps"], r2["drafted"], r2["accepted"]) == (3, 9, 3)
    assert r2["prompt"] == "<script>alert(1)</script>"
    # only averages printed: counts stay null, the average is kept in extra
    assert (r3["verify_steps"], r3["drafted"], r3["accepted"]) == (2, None, None)
    assert json.loads(r3["extra"]) == {"spec_accept_length": 2.5}


def test_servers_without_speculation_print_no_windows() -> None:
    from tests.formats_helpers import lines_of

    text = (
        b"[2026-07-20 10:11:12 TP0] Decode batch, #running-req: 3, #token: 10, token usage: 0.00, "
        b"accept len: 0.00, cuda graph: True, gen throughput (token/s): 12.00, #queue-req: 0\n"
        b"[2026-07-20 10:11:13 TP0] Decode batch, #running-req: 3, accept len: 0.50, #queue-req: 0\n"
    )
    lines = lines_of(text)
    parsed = sglang_log.parse(lines, ctx("x.log"))
    assert accounted(parsed, lines) and parsed.other_lines == 1 and not parsed.windows
    assert "< 1" in parsed.rejects[0].detail  # accept len counts the bonus token, so it is at least 1


def test_request_logs_are_speculative_traffic_for_recommend_and_summary(run, tmp_path) -> None:
    """With no tau stored, SGLang request records read as tau = 0 control traffic: summary had no alpha, recommend
    skipped them ("no per-position counts") and diagnose tested nothing. tau is drafts per verify step."""
    rows = []
    for i in range(60):
        hist = [2, 3, 3, 2]  # 10 verify steps of 3 drafts: accepted 0*2 + 1*3 + 2*3 + 3*2 = 15
        meta = {"spec_verify_ct": 10, "spec_num_correct_drafts": 15, "spec_num_proposed_drafts": 30,
                "spec_correct_drafts_histogram": hist, "completion_tokens": 25}  # fmt: skip
        rows.append({"timestamp": 1784542274.0 + 60 * i, "event": "request.finished", "rid": f"q{i}",
                     "out": {"text": "x", "meta_info": meta}})  # fmt: skip
    path = tmp_path / "sgl.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    db = tmp_path / "s.duckdb"
    assert run("ingest", path, "--db", db, "--deployment", "sgl").exit_code == 0
    (summary,) = json.loads(run("summary", "--db", db, "--json").stdout)["rows"]
    assert summary["alpha"] is not None
    report = json.loads(run("recommend", "--db", db, "--json", "--cost", "0.05", "--boot", "0").stdout)
    (rec,) = report["recommendations"]
    assert rec["deployment"] == "sgl" and rec["current_tau"] == 3 and rec["requests"] == 60
