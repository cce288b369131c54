"""Prometheus scrapes: counters differenced into windows (across files through the store), resets, gauges."""

from __future__ import annotations

import json
from datetime import datetime

import duckdb
import pytest

from specdiag.formats import ParseContext, prometheus
from specdiag.formats._windows import difference
from specdiag.formats.samples import write_samples
from specdiag.store import ensure_schema
from tests.formats_helpers import accounted, ctx, fixture, lines_of


def _parse(name: str, **kwargs: object) -> prometheus.Parsed:
    lines = fixture(name)
    parsed = prometheus.parse(lines, ctx(name, **kwargs))
    assert accounted(parsed, lines)
    return parsed


def test_vllm_v1_scrape_is_one_sample_and_created_is_ignored() -> None:
    parsed = _parse("vllm-v1-scrape-1.prom", mtime=datetime(2026, 7, 20, 12, 0))
    # 16 lines: 6 spec-decode samples used; 7 comments, 2 `_created`, 1 other metric are other lines
    assert (parsed.used_lines, parsed.other_lines, parsed.rejects) == (6, 10, [])
    (sample,) = parsed.samples
    assert (sample["deployment"], sample["engine"], sample["ts"]) == (
        "llama-8b",
        "0",
        datetime(2026, 7, 20, 12),
    )
    assert (sample["verify_steps"], sample["drafted"], sample["accepted"]) == (1000, 3000, 1800)
    assert sample["accepted_per_position"] == [800, 600, 400]


def _memory_store() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    ensure_schema(con)
    return con


def test_scrape_files_difference_through_the_store_in_any_order() -> None:
    con = _memory_store()
    first = _parse("vllm-v1-scrape-1.prom", mtime=datetime(2026, 7, 20, 12, 0))
    second = _parse("vllm-v1-scrape-2.prom", mtime=datetime(2026, 7, 20, 12, 1))  # `vllm_` prefix variant
    assert write_samples(con, second.samples, "file-2") == 1  # alone: one window since process start
    assert write_samples(con, first.samples, "file-1") == 1  # the earlier scrape: windows rebuilt, one more
    rows = con.execute(
        "select start_ts, end_ts, verify_steps, drafted, accepted, accepted_per_position, file_id"
        " from windows order by end_ts"
    ).fetchall()
    since_start, interval = rows
    assert since_start[0] is None and since_start[2:6] == (1000, 3000, 1800, [800, 600, 400])
    # 1500 - 1000 steps, 4500 - 3000 drafted, 2600 - 1800 accepted, [1150 - 800, 850 - 600, 600 - 400]
    assert interval[:6] == (
        datetime(2026, 7, 20, 12, 0),
        datetime(2026, 7, 20, 12, 1),
        500,
        1500,
        800,
        [350, 250, 200],
    )
    assert interval[6] == "file-2"
    # totals over the windows equal the last counters: nothing counted twice
    assert con.execute("select sum(accepted) from windows").fetchone() == (2600,)


def test_timestamped_scrapes_in_one_file_with_a_counter_reset() -> None:
    parsed = _parse("trtllm-timestamped.prom")
    assert [(r.line, r.reason) for r in parsed.rejects] == [(19, "unparsable_metrics")]
    start, interval, after_reset = difference(parsed.samples)
    # verify steps = drafted at position 0: 1000, then 1500 - 1000 = 500
    assert (start["verify_steps"], start["drafted"], start["accepted"]) == (1000, 2000, 1300)
    assert start["printed_mean_acceptance_length"] == 2.9
    assert json.loads(start["extra"])["draft_overhead"] == 0.12
    assert (interval["verify_steps"], interval["drafted"], interval["accepted"]) == (500, 1000, 550)
    assert interval["accepted_per_position"] == [350, 200]  # [1150 - 800, 700 - 500]
    assert interval["end_ts"] == datetime(2026, 7, 20, 12, 1)  # 1784548860000 ms
    # 3000 -> 200 drafted: a restart; the window holds what was counted since it
    assert json.loads(after_reset["extra"])["reset"] is True
    assert (after_reset["verify_steps"], after_reset["drafted"], after_reset["accepted"]) == (100, 200, 150)


def test_gauges_summaries_and_v0_counters() -> None:
    parsed = _parse("sglang-tgi-v0-gauges.prom")
    assert [(r.line, r.reason) for r in parsed.rejects] == [(16, "unparsable_metrics")]
    sglang, v0 = parsed.windows
    assert (sglang["source"], sglang["deployment"]) == ("prometheus/sglang", "qwen-7b")
    assert (sglang["mean_acceptance_length"], sglang["printed_acceptance_rate"]) == (2.87, 0.62)
    assert sglang["accepted"] is None
    # V0: lifetime ratios only, its `*_total` counters are not used
    assert (v0["source"], v0["printed_acceptance_rate"], v0["drafted"]) == ("prometheus/vllm-v0", 0.612, None)
    assert json.loads(v0["extra"]) == {"since_start": True, "system_efficiency": 0.455}
    assert not [s for s in parsed.samples if s["source"] == "prometheus/vllm-v1"]
    (tgi,) = difference(parsed.samples)
    # TGI skipped tokens: MAL = 1 + sum / count = 1 + 5400 / 3000 = 2.8; no drafted count
    assert (tgi["accepted"], tgi["verify_steps"], tgi["drafted"]) == (5400, 3000, None)
    assert tgi["mean_acceptance_length"] == pytest.approx(2.8)


def test_repeated_series_without_timestamps_is_rejected() -> None:
    text = (
        b'vllm:spec_decode_num_drafts_total{engine="0"} 1\nvllm:spec_decode_num_drafts_total{engine="0"} 2\n'
    )
    parsed = prometheus.parse(lines_of(text), ctx("x.prom"))
    assert [r.reason for r in parsed.rejects] == ["unparsable_metrics"]
    assert parsed.samples[0]["verify_steps"] == 1


def test_openmetrics_seconds_label_order_and_ranks() -> None:
    text = (
        b'sglang:spec_accept_length{model_name="m",tp_rank="0"} 2.5 1784548800.250\n'
        b'sglang:spec_accept_length{model_name="m",tp_rank="1"} 3.0 1784548800.250\n'
        b'vllm:spec_decode_num_drafts_total{engine="0",model_name="m"} 10 1784548800\n'
        b'vllm:spec_decode_num_drafts_total{model_name="m",engine="0"} 11 1784548800\n'
        b"# EOF\n"
    )
    parsed = prometheus.parse(lines_of(text), ctx("x.prom"))
    # OpenMetrics prints seconds: 1784548800.250 s = 2026-07-20 12:00:00.25 UTC; each rank is its own window
    assert [(w["instance"], w["mean_acceptance_length"]) for w in parsed.windows] == [
        ("tp_rank=0", 2.5),
        ("tp_rank=1", 3.0),
    ]
    assert parsed.windows[0]["end_ts"] == datetime(2026, 7, 20, 12, 0, 0, 250000)
    # the same series with its labels in another order is a repeat
    assert [r.line for r in parsed.rejects] == [4]
    assert parsed.samples[0]["ts"] == datetime(2026, 7, 20, 12)


def _scrape(drafts: int, accepted: int, minute: int) -> list[dict]:
    text = (
        f'vllm:spec_decode_num_drafts_total{{model_name="m",engine="0"}} {drafts}\n'
        f'vllm:spec_decode_num_accepted_tokens_total{{model_name="m",engine="0"}} {accepted}\n'
    ).encode()
    return prometheus.parse(lines_of(text), ctx("x.prom", mtime=datetime(2026, 7, 20, 12, minute))).samples


def test_a_scrape_ingested_late_is_slotted_in_between() -> None:
    con = _memory_store()
    assert write_samples(con, _scrape(100, 150, 0), "a") == 1
    assert write_samples(con, _scrape(300, 450, 2), "c") == 1
    # the middle scrape arrives last: the 12:00 -> 12:02 window becomes 12:00 -> 12:01 and 12:01 -> 12:02
    assert write_samples(con, _scrape(160, 250, 1), "b") == 1
    rows = con.execute(
        "select minute(end_ts), verify_steps, accepted, file_id from windows order by end_ts"
    ).fetchall()
    # since start: 100 / 150; then 160 - 100 = 60 / 250 - 150 = 100; then 300 - 160 = 140 / 450 - 250 = 200
    assert rows == [(0, 100, 150, "a"), (1, 60, 100, "b"), (2, 140, 200, "c")]


def test_a_nan_scrape_never_turns_the_next_window_into_a_lifetime_total() -> None:
    text = (
        b'vllm:spec_decode_num_drafts_total{engine="0"} 100 1784548800000\n'
        b'vllm:spec_decode_num_accepted_tokens_total{engine="0"} 150 1784548800000\n'
        b'vllm:spec_decode_num_drafts_total{engine="0"} NaN 1784548860000\n'
        b'vllm:spec_decode_num_accepted_tokens_total{engine="0"} 180 1784548860000\n'
        b'vllm:spec_decode_num_drafts_total{engine="0"} 130 1784548920000\n'
        b'vllm:spec_decode_num_accepted_tokens_total{engine="0"} 200 1784548920000\n'
    )
    windows = difference(prometheus.parse(lines_of(text), ctx("x.prom")).samples)
    # verify_steps: 100 since start, unknown at the NaN scrape, unknown after it (not 130); accepted 150, 30, 20
    assert [(w["verify_steps"], w["accepted"]) for w in windows] == [(100, 150), (None, 30), (None, 20)]


def test_deployment_option_keeps_two_models_series_apart() -> None:
    """--deployment names the deployment of every series; each model_name stays its own series (in `instance`):
    they were one, and the second model's values overwrote the first's."""
    text = "".join(
        f'vllm:spec_decode_num_{name}_total{{model_name="{model}",engine="0"}} {value} {ts}\n'
        for ts, scale in ((1794787500000, 1), (1794787800000, 2))
        for model, base in (("a", 100), ("b", 10))
        for name, value in (("drafts", base * scale), ("draft_tokens", 4 * base * scale))
    )
    lines = lines_of(text.encode())
    parsed = prometheus.parse(lines, ParseContext(path="x.prom", deployment="DEP"))
    assert accounted(parsed, lines) and not parsed.rejects
    windows = difference(parsed.samples)
    got = sorted((w["deployment"], w["instance"], w["drafted"]) for w in windows)
    assert got == [("DEP", "model_name=a", 400), ("DEP", "model_name=a", 400), ("DEP", "model_name=b", 40),
                   ("DEP", "model_name=b", 40)]  # fmt: skip
