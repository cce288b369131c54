"""Engine formats end to end through `specdiag ingest`: loss-free accounting, idempotent re-ingest, clean files."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from tests.formats_helpers import FIXTURES

# the lines each fixture deliberately gets wrong (1-based), and the rejects they must produce
BAD_LINES = {
    "vllm-v1-2025-09-dp.log": [11],
    "vllm-v0.log": [6],
    "sglang.log": [10],
    "trtllm-timestamped.prom": [19],
    "sglang-tgi-v0-gauges.prom": [16],
    "vllm-requests.jsonl": [5, 6],
    "sglang-requests.jsonl": [5],
    "trtllm-iterations.jsonl": [2, 3],
}
FORMATS = {  # file -> format auto-detection must choose
    "vllm-v1-2025-09-dp.log": "vllm-log",
    "sglang.log": "sglang-log",
    "trtllm-timestamped.prom": "prometheus",
    "vllm-requests.jsonl": "vllm-request",
    "sglang-requests.jsonl": "sglang-request",
    "trtllm-iterations.json": "trtllm-iterations",
}


def _copy(tmp_path: Path, clean: bool) -> Path:
    folder = tmp_path / ("clean" if clean else "raw")
    folder.mkdir()
    for path in sorted(FIXTURES.iterdir()):
        data = path.read_bytes()
        if clean and path.name in BAD_LINES:
            kept = [raw for i, raw in enumerate(data.split(b"\n"), 1) if i not in BAD_LINES[path.name]]
            data = b"\n".join(kept)
        (folder / path.name).write_bytes(data)
    # two scrapes of one vLLM process, a minute apart (the scrape time is the file's mtime)
    for name, minute in (("vllm-v1-scrape-1.prom", 0), ("vllm-v1-scrape-2.prom", 1)):
        stamp = datetime(2026, 7, 20, 12, minute, tzinfo=UTC).timestamp()
        os.utime(folder / name, (stamp, stamp))
    return folder


def _ingest(run, folder: Path, db: Path) -> dict:
    result = run("ingest", folder, "--db", db, "--no-progress", "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_every_line_accounted_and_bad_lines_quarantined(run, db: Path, tmp_path: Path) -> None:
    folder = _copy(tmp_path, clean=False)
    stats = _ingest(run, folder, db)
    assert stats["files"] == len(list(FIXTURES.iterdir()))
    with duckdb.connect(str(db), read_only=True) as con:
        ledger = con.execute(
            "select path, format, lines, stored_lines + duplicates + blank + rejected + other_lines, rejected"
            " from ingest_ledger"
        ).fetchall()
        for path, fmt, lines, accounted, rejected in ledger:
            name = Path(path).name
            assert lines == accounted, name
            assert lines == len((folder / name).read_bytes().rstrip(b"\n").split(b"\n")), name
            assert rejected == len(BAD_LINES.get(name, [])), name
            assert FORMATS.get(name, fmt) == fmt
        rejected = con.execute("select path, line from rejects order by path, line").fetchall()
        assert sorted((Path(p).name, line) for p, line in rejected) == sorted(
            (name, line) for name, lines in BAD_LINES.items() for line in lines
        )
        # the two scrape files difference against each other: 2600 accepted in all, not 1800 + 2600
        totals = con.execute(
            "select count(*), sum(accepted), sum(verify_steps) from windows where source = 'prometheus/vllm-v1'"
        ).fetchone()
        assert totals == (2, 2600, 1500)


def test_reingest_adds_nothing(run, db: Path, tmp_path: Path) -> None:
    folder = _copy(tmp_path, clean=False)
    _ingest(run, folder, db)
    tables = ("requests", "windows", "counter_samples", "rejects", "ingest_ledger")
    with duckdb.connect(str(db), read_only=True) as con:
        before = [con.execute(f"select count(*) from {t}").fetchone() for t in tables]
    again = _ingest(run, folder, db)
    assert again["skipped"] == again["files"] and again["windows"] == 0
    with duckdb.connect(str(db), read_only=True) as con:
        assert [con.execute(f"select count(*) from {t}").fetchone() for t in tables] == before


def test_clean_files_have_zero_rejects(run, db: Path, tmp_path: Path) -> None:
    stats = _ingest(run, _copy(tmp_path, clean=True), db)
    assert stats["rejected"] == 0
    assert stats["lines"] == stats["blank"] + stats["other_lines"] + _stored(db)


def _stored(db: Path) -> int:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("select sum(stored_lines) from ingest_ledger").fetchone()[0]


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_explicit_format_matches_auto(run, db: Path, tmp_path: Path, name: str) -> None:
    shutil.copy(FIXTURES / name, tmp_path / name)
    result = run("ingest", tmp_path / name, "--db", db, "--format", FORMATS[name], "--no-progress", "--json")
    assert result.exit_code == 0, result.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("select format from ingest_ledger").fetchall() == [(FORMATS[name],)]


@pytest.mark.parametrize("fmt", ["vllm", "sglang", "prometheus"])
def test_simulated_engine_output_ingests_without_rejects(fmt: str, tmp_path: Path) -> None:
    from specdiag.ingest import ingest_paths
    from specdiag.simulate import simulate

    out = tmp_path / f"sim-{fmt}.txt"
    simulate(out, requests=300, days=0.02, seed=3, fmt=fmt)
    stats = ingest_paths([str(out)], db=str(tmp_path / "sim.duckdb"), progress=False)
    assert stats.rejected == 0
    assert stats.windows > 0
    assert stats.lines == stats.stored_lines + stats.blank + stats.other_lines + stats.duplicates


def test_log_tz_option_converts_engine_log_times_to_utc(run, db: Path, tmp_path: Path) -> None:
    log = tmp_path / "vllm.log"
    log.write_text(
        "INFO 12-31 23:59:50 [metrics.py:96] SpecDecoding metrics: Draft acceptance rate: 50.0%,"
        " Accepted: 5 tokens, Drafted: 10 tokens\n"
    )
    result = run("ingest", log, "--db", db, "--year", "2025", "--log-tz", "Europe/Berlin", "--no-progress")
    assert result.exit_code == 0, result.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        # Berlin is UTC+1 in winter: 23:59:50 local is 22:59:50 UTC
        assert con.execute("select max(end_ts) from windows").fetchone() == (
            datetime(2025, 12, 31, 22, 59, 50),
        )
    bad = run("ingest", log, "--db", tmp_path / "other.duckdb", "--log-tz", "Mars/Olympus")
    assert bad.exit_code == 2
    assert "unknown time zone 'Mars/Olympus'" in bad.stderr and "Traceback" not in bad.stderr
