"""vLLM logs: year inference in the log's own time zone, the repeated hour at a DST change, truncated lines."""

from __future__ import annotations

import json
from datetime import datetime

from specdiag.formats import ParseContext, vllm_log
from specdiag.formats._windows import difference
from tests.formats_helpers import accounted, lines_of

V1_0925 = (
    "(APIServer pid=1) INFO {date} {time} [metrics.py:96] SpecDecoding metrics: Mean acceptance length: 2.84, "
    "Accepted throughput: 591.30 tokens/s, Drafted throughput: 964.20 tokens/s, Accepted: 5913 tokens, "
    "Drafted: 9642 tokens, Per-position acceptance rate: {rates}, Avg Draft acceptance rate: 61.3%\n"
)
V0 = (
    "INFO 10-26 {time} [metrics.py:489] Speculative metrics: Draft acceptance rate: 0.612, System efficiency: "
    "0.455, Number of speculative tokens: 4, Number of accepted tokens: {acc}, Number of draft tokens: {drafted}, "
    "Number of emitted tokens: {emitted}.\n"
)


def test_year_from_mtime_compares_local_dates() -> None:
    # written at 2025-06-16 08:00:05 in Tokyo = 2025-06-15 23:00:05 UTC (the mtime is UTC)
    text = V1_0925.format(date="06-16", time="08:00:00", rates="0.792, 0.601, 0.447")
    parsed = vllm_log.parse(
        lines_of(text.encode()),
        ParseContext(path="x.log", mtime=datetime(2025, 6, 15, 23, 0, 5), tz="Asia/Tokyo"),
    )
    assert parsed.windows[0]["end_ts"] == datetime(2025, 6, 15, 23, 0, 0)


def test_repeated_hour_when_clocks_go_back_keeps_cumulative_lines_in_order() -> None:
    # Berlin 2025-10-26: 02:59:55 CEST (00:59:55 UTC), then 02:00:00 and 02:00:05 CET (01:00:00, 01:00:05 UTC)
    text = "".join(
        V0.format(time=t, acc=n * 100, drafted=n * 400, emitted=n * 250)
        for t, n in (("02:59:55", 1), ("02:00:00", 2), ("02:00:05", 3))
    )
    parsed = vllm_log.parse(
        lines_of(text.encode()), ParseContext(path="x.log", year=2025, tz="Europe/Berlin")
    )
    assert [s["ts"] for s in parsed.samples] == [
        datetime(2025, 10, 26, 0, 59, 55),
        datetime(2025, 10, 26, 1, 0, 0),
        datetime(2025, 10, 26, 1, 0, 5),
    ]
    windows = difference(parsed.samples)
    assert [w["drafted"] for w in windows] == [400, 400, 400]  # sums to the last cumulative value, 1200
    assert not any("reset" in json.loads(w["extra"]) for w in windows)


def test_v1_line_cut_inside_its_rates_is_rejected_not_stored_with_a_smaller_tau() -> None:
    text = (
        V1_0925.format(date="09-15", time="10:00:10", rates="0.792, 0.601, 0.447")
        # a truncated write: the rest of the line is lost
        + V1_0925.format(date="09-15", time="10:00:20", rates="0.792, 0.6").split(", Avg Draft")[0]
        + "\n"
    )
    lines = lines_of(text.encode())
    parsed = vllm_log.parse(lines, ParseContext(path="x.log", year=2025))
    assert accounted(parsed, lines)
    assert [w["tau"] for w in parsed.windows] == [3]
    assert [(r.line, r.reason) for r in parsed.rejects] == [(2, "unparsable_metrics")]
