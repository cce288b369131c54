"""Ingest under stress: arbitrary bytes, engine-format dispatch, kill -9 mid-file, a second writer."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import types
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specdiag import formats
from specdiag.ingest import ingest_paths
from specdiag.store import connect

ROOT = Path(__file__).resolve().parent.parent
GOOD = json.dumps(
    {
        "request_id": "r",
        "ts": 1740830400,
        "deployment": "chat",
        "target_model": "t",
        "draft_model": "d",
        "tau": 2,
        "steps": [{"step": 0, "drafted": 2, "accepted": 1}],
    }
).encode()


def count(db: Path, sql: str, row: bool = False) -> Any:
    con = duckdb.connect(str(db), read_only=True)
    try:
        first = con.execute(sql).fetchall()[0]
        return first if row else first[0]
    finally:
        con.close()


_lines = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.just(GOOD),
        st.just(GOOD.replace(b'"r"', b'"s"')),
        st.just(GOOD[:-3]),
        st.just(b"   "),
        st.just(b'{"event": "step", "request_id": "r", "step": 0, "drafted": 1, "accepted": 1}'),
        st.sampled_from([b"\xff", b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"{}", b"null", b"\r"]),
    ),
    max_size=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_lines, st.booleans())
def test_never_raises_and_accounts_for_every_line(
    tmp_path: Path, lines: list[bytes], final_newline: bool
) -> None:
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    f = tmp_path / f"input-{hashlib.sha256(data).hexdigest()}.bin"
    f.write_bytes(data)
    db = tmp_path / "h.duckdb"  # one store for all examples: duplicates across examples are part of the test
    stats = ingest_paths([f], db=db, fmt="trace", progress=False)
    if stats.skipped:  # the same bytes were drawn before
        return
    ledger = count(
        db, f"select lines, stored_lines, rejected from ingest_ledger where path = '{f}'", row=True
    )
    assert stats.lines == stats.stored_lines + stats.duplicates + stats.blank + stats.rejected
    assert ledger == (stats.lines, stats.stored_lines, stats.rejected)
    if not data.startswith(
        (b"\x1f\x8b", b"\x28\xb5\x2f\xfd")
    ):  # else the bytes are read as a (broken) stream
        assert stats.lines == data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)


# --- engine formats go through the contract in specdiag.formats -----------------------------------------------


def _fake_parse(lines: Iterable[formats.Line], ctx: formats.ParseContext) -> formats.Parsed:
    parsed = formats.Parsed(format="fake-log")
    for line in lines:
        text = line.raw.decode()
        if not text.strip():
            parsed.blank += 1
        elif text.startswith("REQ "):
            rid = text.split()[1]
            parsed.requests.append(
                {
                    "request_id": rid,
                    "ts": datetime(2025, 3, 1, 12),
                    "deployment": ctx.deployment or "x",
                    "tau": 3,
                    "line": line.number,
                }
            )
            parsed.used_lines += 1
        elif text.startswith("WIN "):
            parsed.windows.append(
                {
                    "source": "fake-log",
                    "deployment": ctx.deployment or "x",
                    "end_ts": datetime(2025, 3, 1, 12),
                    "drafted": int(text.split()[1]),
                }
            )
            parsed.used_lines += 1
        elif text.startswith("WIN"):
            parsed.rejects.append(
                formats.Reject(line.number, line.byte_offset, "unparsable_metrics", "no count", line.raw)
            )
        else:
            parsed.other_lines += 1
    return parsed


@pytest.fixture
def fake_format(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("specdiag.formats._fake_test")
    module.NAME = "fake-log"  # type: ignore[attr-defined]
    module.detect = lambda head: bool(head) and head[0].startswith("FAKE LOG")  # type: ignore[attr-defined]
    module.parse = _fake_parse  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "specdiag.formats._fake_test", module)
    monkeypatch.setattr(formats, "FORMATS", ["_fake_test"])


def test_engine_format_dispatch(run: Any, db: Path, tmp_path: Path, fake_format: None) -> None:
    f = tmp_path / "engine.log"
    f.write_text("FAKE LOG v1\nREQ a\nREQ b\nREQ a\n\nWIN 12\nWINx\n")
    result = run("ingest", f, "--db", db, "--deployment", "prod", "--json")
    assert result.exit_code == 0, result.stderr
    assert f"{f}: format fake-log" in result.stderr
    out = json.loads(result.stdout)
    assert (out["requests"], out["duplicates"], out["windows"], out["rejected"], out["blank"], out["other_lines"]) == (
        2, 1, 1, 1, 1, 1,
    )  # fmt: skip
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("select request_id, source, deployment from requests order by 1").fetchall() == [
        ("a", "fake-log", "prod"),
        ("b", "fake-log", "prod"),
    ]
    assert con.execute("select drafted, file_id is not null from windows").fetchall() == [(12, True)]
    assert con.execute("select line, reason from rejects").fetchall() == [(7, "unparsable_metrics")]
    assert con.execute("select format, lines from ingest_ledger").fetchall() == [("fake-log", 7)]
    con.close()


def test_unknown_format_without_formats(
    run: Any, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(formats, "FORMATS", [])
    f = tmp_path / "engine.log"
    f.write_text("FAKE LOG v1\nREQ a\n")
    result = run("ingest", f, "--db", db)
    assert result.exit_code == 3 and f"{f}: unknown format" in result.stderr


# --- crash safety and locking: real processes ----------------------------------------------------------------


def _big_trace(path: Path, n_requests: int) -> None:
    steps = ",".join(
        json.dumps({"step": i, "drafted": 4, "accepted": i % 5, "verify_ms": 20.5}) for i in range(100)
    )
    with open(path, "w") as f:
        for i in range(n_requests):
            f.write(
                f'{{"request_id":"big-{i}","ts":1740830400,"deployment":"chat","target_model":"t","draft_model":"d",'
                f'"tau":4,"prompt":"{"p" * 200}","steps":[{steps}]}}\n'
            )


def _ingest_cmd(db: Path, *paths: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "specdiag",
        "ingest",
        *map(str, paths),
        "--db",
        str(db),
        "--no-progress",
        "--json",
    ]


@pytest.mark.slow
def test_kill_9_mid_ingest_leaves_a_consistent_store(db: Path, tmp_path: Path) -> None:
    small = ROOT / "examples" / "nested-steps.jsonl"
    big = tmp_path / "big.jsonl"
    _big_trace(big, 6_000)  # 600k steps: seconds of work, killed long before the end
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(_ingest_cmd(db, small), check=True, env=env, capture_output=True)
    cmd = _ingest_cmd(db, big)
    cmd.remove("--no-progress")  # the per-file format line on stderr says the file transaction is under way
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    assert b"format trace" in proc.stderr.readline()
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, (
        "ingest finished before it could be killed: make the file bigger"
    )
    # the killed file left nothing: only the first file's rows and ledger row
    assert count(db, "select count(*) from ingest_ledger") == 1
    assert count(db, "select count(*) from requests") == 12
    assert count(db, "select count(*) from requests where request_id like 'big-%'") == 0
    assert count(db, "select count(*) from steps where request_id like 'big-%'") == 0
    # a re-run completes it
    out = subprocess.run(_ingest_cmd(db, small, big), check=True, env=env, capture_output=True, text=True)
    stats = json.loads(out.stdout)
    assert (stats["skipped"], stats["requests"], stats["steps"]) == (1, 6_000, 600_000)
    assert count(db, "select sum(drafted) from requests where request_id like 'big-%'") == 6_000 * 400


@pytest.mark.slow
def test_kill_9_mid_folder_of_small_files_leaves_whole_files_only(db: Path, tmp_path: Path) -> None:
    # small files share a transaction: a crash loses the files of the group under way, never part of a file
    folder = tmp_path / "logs"
    folder.mkdir()
    for k in range(20):  # about 2.3 MB each: several groups of 16 MB (and at most 20 files: a line for each)
        _big_trace(folder / f"{k:02d}.jsonl", 300)
        text = (folder / f"{k:02d}.jsonl").read_text().replace('"big-', f'"f{k}-')
        (folder / f"{k:02d}.jsonl").write_text(text)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = _ingest_cmd(db, folder)
    cmd.remove("--no-progress")  # a file's format line on stderr comes once its group is committed
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    while b"format trace" not in (line := proc.stderr.readline()):  # past the progress bar's output
        assert line, "ingest ended without naming a file's format"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "ingest finished before it could be killed: add files"
    files = count(db, "select count(*) from ingest_ledger")
    assert 0 < files < 20
    # every file in the ledger has all its rows, and no row belongs to a file outside it
    assert count(db, "select count(*) from ingest_ledger where requests <> 300 or steps <> 30000") == 0
    assert count(db, "select count(*) from requests") == 300 * files
    outside = "select count(*) from requests where file_id not in (select file_id from ingest_ledger)"
    assert count(db, outside) == 0
    assert count(db, "select count(*) from steps") == 30_000 * files
    out = subprocess.run(_ingest_cmd(db, folder), check=True, env=env, capture_output=True, text=True)
    stats = json.loads(out.stdout)
    assert (stats["skipped"], stats["requests"]) == (files, 300 * (20 - files))
    assert count(db, "select count(*), sum(drafted) from requests", row=True) == (6_000, 6_000 * 400)


def test_second_writer_gets_a_clear_error(db: Path, tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(db)!r}); print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        out = subprocess.run(
            _ingest_cmd(db, ROOT / "examples" / "flat-steps.jsonl"), env=env, capture_output=True, text=True
        )
    finally:
        holder.kill()
        holder.wait()
    assert out.returncode == 4
    assert "in use by another process" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["ingest", "summary", "diagnose", "sql", "report"])
def test_a_foreign_duckdb_file_is_refused_untouched(run: Any, tmp_path: Path, command: str) -> None:
    """A DuckDB file of something else is not a store: no command adds specdiag's tables to it (diagnose did)."""
    foreign = tmp_path / "other.duckdb"
    con = duckdb.connect(str(foreign))
    con.execute("create table requests (id integer)")  # even a table of the same name
    con.close()
    args = {
        "ingest": [ROOT / "examples" / "flat-steps.jsonl"],
        "sql": ["select 1"],
        "report": ["--out", tmp_path / "r.html"],
    }.get(command, [])
    out = run(command, *args, "--db", foreign)
    assert out.exit_code == 4 and "not a specdiag store" in out.stderr and out.stderr.count("\n") == 1
    con = duckdb.connect(str(foreign), read_only=True)
    assert con.execute("select table_name from duckdb_tables()").fetchall() == [("requests",)]
    con.close()


def test_a_store_from_a_newer_specdiag_is_refused(run: Any, db: Path) -> None:
    con = connect(db)
    con.execute("update schema_info set version = version + 1")
    con.close()
    out = run("summary", "--db", db)
    assert out.exit_code == 4 and "newer specdiag" in out.stderr


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl"])
def test_a_db_path_naming_a_data_file_is_refused_untouched(run: Any, tmp_path: Path, suffix: str) -> None:
    """DuckDB opens an existing CSV or JSON file as an in-memory database: ingest reported success and kept
    nothing. It is now refused, and the file is left as it was."""
    victim = tmp_path / f"data{suffix}"
    content = b'{"a": 1}\n' if "json" in suffix else b"a,b\n1,2\n"
    victim.write_bytes(content)
    out = run("ingest", ROOT / "examples" / "flat-steps.jsonl", "--db", victim)
    assert out.exit_code == 4 and "is not a DuckDB database file" in out.stderr
    assert victim.read_bytes() == content
    # read-only commands said "Cannot launch in-memory database in read-only mode!"
    out = run("summary", "--db", victim)
    assert out.exit_code == 4 and out.stderr.startswith(f"error: {victim} is not a DuckDB database file")
    assert victim.read_bytes() == content


def test_closed_stdin_is_a_one_line_error(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        ["bash", "-c", f'exec 0<&-; "{sys.executable}" -m specdiag ingest - --db "{tmp_path / "s.duckdb"}"'],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 3 and done.stderr.strip() == "error: -: standard input is closed"


@pytest.mark.parametrize(
    "raised", [KeyboardInterrupt(), RuntimeError("Query interrupted"), duckdb.InterruptException()]
)
def test_ctrl_c_anywhere_is_aborted_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, raised: BaseException
) -> None:
    """Ctrl-C while DuckDB runs a statement surfaces as InterruptException, or as a RuntimeError from a relation."""
    from specdiag import cli

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise raised

    monkeypatch.setattr(cli.cli, "main", interrupted)
    with pytest.raises(SystemExit) as stop:
        cli.main(["summary"])
    assert stop.value.code == 130
