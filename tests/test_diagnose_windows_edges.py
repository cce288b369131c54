"""diagnose_windows edge cases: logging gaps, counters' since-start windows, unknown verify steps."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from specdiag.diagnose import data, diagnose
from specdiag.store import connect

T0 = datetime(2026, 1, 1)
COLS = (
    "source", "deployment", "engine", "instance", "from_samples", "start_ts", "end_ts", "tau", "verify_steps",
    "drafted", "accepted", "throughput_tokens_s",
)  # fmt: skip
INSERT = (
    "insert into windows (source, deployment, engine, instance, from_samples, start_ts, end_ts, tau, verify_steps,"
    " drafted, accepted, throughput_tokens_s) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _insert(db: Path, rows: list[tuple]) -> None:
    con = connect(db)
    con.executemany(INSERT, rows)
    con.close()


def _drop(minutes: int = 48 * 60, step: int = 5, **kw) -> list[tuple]:
    """A window every ``step`` minutes, acceptance 0.6 then 0.4 from hour 24 (exact counts)."""
    out = []
    for k in range(1, minutes // step + 1):
        end = T0 + timedelta(minutes=k * step)
        a = 240 if end < T0 + timedelta(hours=24) else 160
        row = {
            "source": "prometheus/vllm-v1",
            "deployment": "svc",
            "engine": "0",
            "instance": None,
            "from_samples": True,
            "start_ts": end - timedelta(minutes=step),
            "end_ts": end,
            "tau": 4,
            "verify_steps": 100.0,
            "drafted": 400 + (k % 7),
            "accepted": a + (k % 5),
            "throughput_tokens_s": None,
        }
        row.update(kw)
        out.append(tuple(row[c] for c in COLS))
    return out


def test_a_since_start_window_does_not_hide_a_regression(tmp_path: Path) -> None:
    # the first scrape of a server up for days: a window since process start (start_ts null) with days of counts
    first = ("prometheus/vllm-v1", "svc", "0", None, True, None, T0, 4, 2e6, 8_000_000, 5_600_000, None)
    _insert(tmp_path / "s.duckdb", [first, *_drop()])
    con = connect(tmp_path / "s.duckdb")
    found = diagnose(con)
    assert [f.kind for f in found] == ["acceptance_regression"]


def test_unknown_verify_steps_come_from_drafted_over_tau(tmp_path: Path) -> None:
    _insert(tmp_path / "v.duckdb", _drop(verify_steps=None))
    (f,) = diagnose(connect(tmp_path / "v.duckdb"))
    assert f.evidence["decode_slowdown"] is not None and f.evidence["decode_slowdown"] > 0.1
    assert f.severity == "high"


def test_vllm_seconds_are_the_logging_interval_not_the_idle_gap(tmp_path: Path) -> None:
    # vLLM prints a window every 10 s while there are drafts, none while idle: 6 busy windows then 5 idle minutes
    rows = []
    for burst in range(12):
        for i in range(6):
            end = T0 + timedelta(minutes=6 * burst, seconds=10 * (i + 1))
            rows.append(
                ("vllm-v1-log/2025-09", "svc", "0", "pid=1", False, None, end, 4, 25.0, 100, 60, 100.0)
            )
    _insert(tmp_path / "g.duckdb", rows)
    con = connect(tmp_path / "g.duckdb")
    out = data.window_segments(con)["output_tokens"].sum()
    assert out == 12 * 6 * 100.0 * 10  # 10 s per window, not up to 5 minutes
