"""vLLM logs: V1 SpecDecoding lines in every shape, DP attribution, V0 cumulative lines, years and time zones."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from specdiag.formats import ParseContext, vllm_log
from specdiag.formats._windows import difference
from tests.formats_helpers import accounted, ctx, fixture, lines_of


def test_v1_current_shape_with_dp_engines_and_nan() -> None:
    lines = fixture("vllm-v1-2025-09-dp.log")
    parsed = vllm_log.parse(lines, ctx("vllm-v1-2025-09-dp.log"))
    assert accounted(parsed, lines)
    # 12 lines: 3 SpecDecoding + 3 `Engine NNN:` lines used, 1 blank, 4 unrelated, 1 unparsable (Accepted: lots)
    assert (parsed.used_lines, parsed.blank, parsed.other_lines) == (6, 1, 4)
    assert [(r.line, r.reason) for r in parsed.rejects] == [(11, "unparsable_metrics")]
    first, second, idle = parsed.windows
    assert first["source"] == "vllm-v1-log/2025-09"
    assert first["deployment"] == "vllm-v1-2025-09-dp"  # the file name without suffixes
    assert (first["accepted"], first["drafted"]) == (5913, 9642)
    # verify_steps = accepted / (MAL - 1) = 5913 / 1.84 = 3213.58...
    assert first["verify_steps"] == pytest.approx(5913 / 1.84)
    # per-position counts = rate x verify_steps: 0.792 * 3213.587 = 2545.16
    assert first["accepted_per_position"][0] == pytest.approx(0.792 * 5913 / 1.84)
    assert first["printed_per_position"] == [0.792, 0.601, 0.447]
    assert first["printed_acceptance_rate"] == pytest.approx(0.613)  # 61.3% printed
    assert first["tau"] == 3
    # the preceding `Engine 000:` line gives engine, throughput and running requests; ANSI codes are stripped
    assert (first["engine"], first["throughput_tokens_s"], first["running_requests"]) == ("0", 612.3, 24)
    assert first["instance"] == "APIServer pid=2187"
    assert (second["engine"], second["verify_steps"]) == ("1", pytest.approx(1500 / 1.5))  # 1000 steps
    assert second["accepted_per_position"] == pytest.approx([700, 500, 300])
    assert second["end_ts"] == datetime(2026, 9, 20, 10, 0, 20)  # year from the mtime (2026-11-01)
    # an all-nan interval keeps its counts (0, 0) and leaves what cannot be derived null
    assert (idle["accepted"], idle["drafted"], idle["verify_steps"], idle["mean_acceptance_length"]) == (
        0,
        0,
        None,
        None,
    )
    assert idle["printed_per_position"] == [None, None, None]


def test_v1_older_shapes_told_apart() -> None:
    lines = fixture("vllm-v1-older.log")
    parsed = vllm_log.parse(lines, ctx("vllm-v1-older.log"))
    assert accounted(parsed, lines) and not parsed.rejects
    early_may, late_may, april = parsed.windows
    # rates sum to 0.801 + 0.579 + 0.366 = 1.746: MAL 1.75 printed = sum (bonus excluded, 2025-04-24 to 05-09)
    assert early_may["source"] == "vllm-v1-log/2025-04-24"
    assert early_may["verify_steps"] == pytest.approx(3491 / 1.75)
    assert early_may["mean_acceptance_length"] == pytest.approx(2.75)  # 1 + accepted / verify_steps
    assert early_may["printed_mean_acceptance_length"] == 1.75
    assert (early_may["throughput_tokens_s"], early_may["engine"]) == (200.0, None)  # no `Engine NNN:` prefix
    # MAL 2.75 printed = 1 + sum: the later definition, verify_steps = 3491 / 1.75 as well
    assert late_may["source"] == "vllm-v1-log/2025-05"
    assert late_may["verify_steps"] == pytest.approx(3491 / 1.75)
    assert late_may["throughput_tokens_s"] is None  # no companion line before it
    # the first shape: no MAL, so no verify_steps; the bracket-less envelope still parses
    assert april["source"] == "vllm-v1-log/2025-04"
    assert (april["accepted"], april["drafted"], april["verify_steps"]) == (66, 66, None)
    assert april["printed_acceptance_rate"] == 1.0


def test_v0_cumulative_lines_difference_with_restart_and_stage_times() -> None:
    lines = fixture("vllm-v0.log")
    parsed = vllm_log.parse(lines, ctx("vllm-v0.log"))
    assert accounted(parsed, lines)
    assert [(r.line, r.reason) for r in parsed.rejects] == [(6, "unparsable_metrics")]
    assert not parsed.windows and len(parsed.samples) == 3
    start, second, restarted = difference(parsed.samples)
    # k = 4: verify_steps = draft tokens / 4 = 800 / 4 = 200; accepted = emitted - steps = 500 - 200 = 300
    assert (start["verify_steps"], start["drafted"], start["accepted"]) == (200, 800, 300)
    assert start["start_ts"] is None and json.loads(start["extra"])["since_start"]
    # next line: (2000 - 800) / 4 = 300 steps, 1200 drafted, (1300 - 500) - 300 = 500 accepted
    assert (second["verify_steps"], second["drafted"], second["accepted"]) == (300, 1200, 500)
    assert second["mean_acceptance_length"] == pytest.approx(1 + 500 / 300)
    # the two stage-time lines between them are averaged: (2.31 + 2.51) / 2, (21.84 + 22.16) / 2, (0.96 + 1.04) / 2
    assert second["draft_ms_per_token"] == pytest.approx(2.41)
    assert (second["scoring_ms"], second["verification_ms"]) == (pytest.approx(22.0), pytest.approx(1.0))
    # counters dropped (2000 -> 200): a restart, the window holds the new totals 200 / 4 = 50 steps, 110 - 50 = 60
    assert json.loads(restarted["extra"])["reset"] is True
    assert (restarted["verify_steps"], restarted["drafted"], restarted["accepted"]) == (50, 200, 60)
    assert restarted["tau"] == 4  # `tokens tokens` variant of 2024 parsed


def _line(text: str) -> list:
    return lines_of(text.encode())


V1 = "INFO {date} 23:59:50 [metrics.py:96] SpecDecoding metrics: Draft acceptance rate: 50.0%, Accepted: 5 tokens, Drafted: 10 tokens\n"


def test_year_option_time_zone_and_new_year() -> None:
    text = V1.format(date="12-31") + V1.format(date="01-01")
    parsed = vllm_log.parse(_line(text), ParseContext(path="x.log", year=2025))
    assert [w["end_ts"] for w in parsed.windows] == [
        datetime(2025, 12, 31, 23, 59, 50),
        datetime(2026, 1, 1, 23, 59, 50),
    ]
    # a log read in January whose dates are in December belongs to the year before the mtime
    parsed = vllm_log.parse(
        _line(V1.format(date="12-31")), ParseContext(path="x.log", mtime=datetime(2026, 1, 2))
    )
    assert parsed.windows[0]["end_ts"].year == 2025
    assert any("took 2025" in note for note in parsed.notes)
    # local times in Berlin (UTC+1 in winter) are stored as UTC
    parsed = vllm_log.parse(
        _line(V1.format(date="12-31")), ParseContext(path="x.log", year=2025, tz="Europe/Berlin")
    )
    assert parsed.windows[0]["end_ts"] == datetime(2025, 12, 31, 22, 59, 50)


def test_metrics_line_without_envelope_or_with_accepted_over_drafted_is_rejected() -> None:
    text = (
        "SpecDecoding metrics: Accepted: 5 tokens, Drafted: 10 tokens\n"
        "INFO 01-01 00:00:00 [metrics.py:96] SpecDecoding metrics: Accepted: 11 tokens, Drafted: 10 tokens\n"
        "INFO 01-01 00:00:00 [metrics.py:96] SpecDecoding metrics: Mean acceptance length: 2.0\n"
        "\xff\xfe SpecDecoding metrics:\n"
    )
    data = text.encode("utf-8").replace("\xff\xfe".encode(), b"\xff\xfe")
    parsed = vllm_log.parse(lines_of(data), ParseContext(path="x.log", year=2025))
    assert [r.reason for r in parsed.rejects] == ["unparsable_metrics"] * 3 + ["invalid_utf8"]
    assert "Accepted 11 > Drafted 10" in parsed.rejects[1].detail


def test_v0_stage_times_without_counters_are_kept_as_timing_windows() -> None:
    text = (
        "INFO 03-10 08:15:03 [spec_decode_worker.py:1100] SpecDecodeWorker stage times: "
        "average_time_per_proposal_tok_ms=2.00 scoring_time_ms=20.00 verification_time_ms=1.00\n"
        "INFO 03-10 08:15:04 [spec_decode_worker.py:1100] SpecDecodeWorker stage times: "
        "average_time_per_proposal_tok_ms=4.00 scoring_time_ms=30.00 verification_time_ms=2.00\n"
        "INFO 03-10 08:15:05 [spec_decode_worker.py:1100] SpecDecodeWorker stage times: bogus=1\n"
    )
    lines = _line(text)
    parsed = vllm_log.parse(lines, ParseContext(path="x.log", year=2025))
    assert accounted(parsed, lines) and [r.line for r in parsed.rejects] == [3]
    (timing,) = parsed.windows
    # means of the two lines: (2 + 4) / 2 ms per draft token, (20 + 30) / 2 ms scoring, (1 + 2) / 2 ms verification
    assert (timing["draft_ms_per_token"], timing["scoring_ms"], timing["verification_ms"]) == (3.0, 25.0, 1.5)
    assert (timing["verify_steps"], timing["drafted"], timing["accepted"]) == (None, None, None)


def test_companion_line_of_a_rejected_metrics_line_is_still_accounted() -> None:
    text = (
        "INFO 01-01 00:00:00 [loggers.py:1] Engine 000: Avg prompt throughput: 1.0 tokens/s, "
        "Avg generation throughput: 2.0 tokens/s, Running: 1 reqs\n"
        "INFO 01-01 00:00:00 [metrics.py:96] SpecDecoding metrics: Accepted: x tokens, Drafted: 1 tokens\n"
        "INFO 01-01 00:00:01 [logger.py:39] Received request cmpl-1: prompt: 'SpecDecoding metrics: Accepted: 1'\n"
    )
    lines = _line(text)
    parsed = vllm_log.parse(lines, ParseContext(path="x.log", year=2025))
    assert accounted(parsed, lines)
    # the companion line and the echoed prompt are other lines; only the broken metrics line is rejected
    assert ([r.line for r in parsed.rejects], parsed.other_lines) == ([2], 2)


@pytest.mark.parametrize(
    "fields",
    [
        "Mean acceptance length: 0.50, Accepted: 5 tokens, Drafted: 10 tokens, Avg Draft acceptance rate: 50.0%",
        "Mean acceptance length: 2.00, Accepted: 5 tokens, Drafted: 10 tokens, Per-position acceptance rate: 1.5",
        "Mean acceptance length: 2.00, Accepted: -5 tokens, Drafted: 10 tokens",
    ],
)
def test_impossible_values_are_rejected(fields: str) -> None:
    lines = _line(f"INFO 01-01 00:00:00 [metrics.py:96] SpecDecoding metrics: {fields}\n")
    parsed = vllm_log.parse(lines, ParseContext(path="x.log", year=2025))
    assert [r.reason for r in parsed.rejects] == ["unparsable_metrics"] and not parsed.windows


def test_v0_stage_times_after_the_last_metrics_line_are_averaged_into_its_window() -> None:
    """Stage times before a Speculative metrics line belong to it; those printed after the last one are averaged
    with them (they replaced them before), and every window names its process the same way."""
    stage = (
        "(VllmWorkerProcess pid=77) INFO 03-10 08:15:{s:02d} [spec_decode_worker.py:1100] SpecDecodeWorker stage "
        "times: average_time_per_proposal_tok_ms={d:.2f} scoring_time_ms={c:.2f} verification_time_ms=1.00\n"
    )
    metrics = (
        "(VllmWorkerProcess pid=77) INFO 03-10 08:15:07 [metrics.py:489] Speculative metrics: Draft acceptance "
        "rate: 0.612, System efficiency: 0.455, Number of speculative tokens: 4, Number of accepted tokens: 99213, "
        "Number of draft tokens: 162480, Number of emitted tokens: 92495.\n"
    )
    text = stage.format(s=1, d=1.0, c=10.0) + metrics + stage.format(s=8, d=3.0, c=30.0)
    lines = _line(text)
    parsed = vllm_log.parse(lines, ParseContext(path="x.log", year=2025))
    assert accounted(parsed, lines) and not parsed.rejects
    (only,) = difference(parsed.samples)
    assert (only["draft_ms_per_token"], only["scoring_ms"]) == (2.0, 20.0)  # (1 + 3) / 2, (10 + 30) / 2
    alone = vllm_log.parse(_line(stage.format(s=1, d=1.0, c=10.0)), ParseContext(path="x.log", year=2025))
    assert only["instance"] == alone.windows[0]["instance"] == "VllmWorkerProcess pid=77"


def test_a_2025_04_24_line_without_verify_steps_keeps_the_bonus_token_in_its_mal() -> None:
    """MAL then excluded the bonus token; with 0.00 printed, verify_steps = accepted / MAL is unknown, and the
    window's MAL is the printed one + 1 (it was 0.00: below 1, the least a verify step emits)."""
    text = (
        "INFO 07-20 10:00:30 [metrics.py:200] SpecDecoding metrics: Draft acceptance rate: 0.0%, Mean acceptance "
        "length: 0.00, Accepted: 2 tokens, Drafted: 6000 tokens, Per-position acceptance rate: 0.000, 0.000, 0.000\n"
    )
    (w,) = vllm_log.parse(_line(text), ParseContext(path="x.log", year=2025)).windows
    assert w["source"] == "vllm-v1-log/2025-04-24" and w["verify_steps"] is None
    assert w["mean_acceptance_length"] == 1.0


def test_a_window_that_accepted_nothing_counts_its_steps_from_tau() -> None:
    """MAL 1.00 gives no step count (accepted / (MAL - 1) is 0 / 0); drafted / tau does, so the window keeps its weight
    in summaries (weighted by running requests instead, it skewed a deployment's MAL by 3%)."""
    text = (
        "INFO 07-20 10:00:30 [metrics.py:96] SpecDecoding metrics: Mean acceptance length: 1.00, Accepted: 0 tokens, "
        "Drafted: 300 tokens, Per-position acceptance rate: 0.000, 0.000, 0.000, Avg Draft acceptance rate: 0.0%\n"
    )
    (w,) = vllm_log.parse(_line(text), ParseContext(path="x.log", year=2025)).windows
    assert (w["verify_steps"], w["tau"], w["mean_acceptance_length"]) == (100, 3, 1.0)
    assert w["accepted_per_position"] == [0.0, 0.0, 0.0]
