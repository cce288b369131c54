"""Inputs that once crashed the process inside pyarrow's JSON reader are rejected line by line instead."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

GOOD = {
    "request_id": "r1",
    "ts": 1740830400,
    "deployment": "chat",
    "target_model": "t@v1",
    "draft_model": "d@v1",
    "tau": 2,
    "steps": [{"step": 0, "drafted": 2, "accepted": 1}],
}


@pytest.mark.parametrize(
    "lines",
    [
        [b"null"],  # first value null: SIGSEGV in pyarrow 26 when it reached the reader
        [b"  null", json.dumps(GOOD).encode()],
        [json.dumps(GOOD).encode(), b"null"],  # a later null would have become a row of nulls
        [json.dumps(GOOD).encode() + b"null"],  # two values on one line
    ],
)
def test_non_object_lines_are_rejected_not_fatal(tmp_path: Path, lines: list[bytes]) -> None:
    f = tmp_path / "t.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    db = tmp_path / "t.duckdb"
    proc = subprocess.run(
        [sys.executable, "-m", "specdiag", "ingest", str(f), "--db", str(db), "--format", "trace", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr  # a crash shows as a negative return code
    counts = json.loads(proc.stdout)
    stored = 1 if json.dumps(GOOD).encode() in lines else 0
    assert counts["requests"] == stored
    assert counts["rejected"] == len(lines) - stored


def _nested(depth: int, kind: str) -> bytes:
    """A valid request whose extra field ``x`` nests arrays or objects so that the line is ``depth`` deep."""
    inner = depth - 1  # the line's own object is one level
    value = "[" * inner + "1" + "]" * inner if kind == "array" else '{"a":' * inner + "1" + "}" * inner
    return json.dumps({**GOOD, "request_id": f"deep-{kind}-{depth}", "steps": []})[:-1].encode() + (
        f', "x": {value}}}'.encode()
    )


def _ingest(tmp_path: Path, lines: list[bytes], *args: str) -> tuple[dict[str, int], list[tuple[str, int]]]:
    f = tmp_path / "t.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    db = tmp_path / f"t{len(list(tmp_path.glob('*.duckdb')))}.duckdb"
    proc = subprocess.run(
        [sys.executable, "-m", "specdiag", "ingest", str(f), "--db", str(db), "--json", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    # a crash shows as a negative return code, an error as 1-4
    assert proc.returncode == 0, proc.stderr[-2000:]
    con = duckdb.connect(str(db), read_only=True)
    rejects = con.execute("select reason, line from rejects order by line").fetchall()
    con.close()
    return json.loads(proc.stdout), rejects


@pytest.mark.parametrize("fmt", [[], ["--format", "trace"]])
def test_deep_nesting_is_rejected_not_fatal(tmp_path: Path, fmt: list[str]) -> None:
    """Lines nested deeper than 128 levels are invalid_json, wherever they sit; the reader crashed (polars near 800
    levels, pyarrow's parser near 10,000) or Python raised RecursionError (near 1,000). Up to 128 the value is kept."""
    good = json.dumps(GOOD).encode()
    deep = [_nested(d, kind) for d in (129, 800, 3_000, 200_000) for kind in ("array", "object")]
    lines = [good, _nested(128, "array"), _nested(128, "object"), *deep, good.replace(b'"r1"', b'"r2"')]
    counts, rejects = _ingest(tmp_path, lines, *fmt)
    assert counts["requests"] == 4 and counts["rejected"] == len(deep)
    assert rejects == [("invalid_json", n) for n in range(4, 4 + len(deep))]
    # alone: the first line of a file, where the format is sniffed
    alone, rejects = _ingest(tmp_path, [deep[-1]], *fmt)
    assert alone["rejected"] == 1 and rejects == [("invalid_json", 1)]


def test_a_long_request_is_stored_whole(tmp_path: Path) -> None:
    """A request with more steps than the nesting guard's threshold (2,048 opening brackets) is not mistaken for
    deep nesting."""
    steps = [
        {"step": i, "drafted": 2, "accepted": i % 3, "draft_token_ids": [i, i + 1]} for i in range(5_000)
    ]
    counts, rejects = _ingest(tmp_path, [json.dumps({**GOOD, "steps": steps}).encode()])
    assert (counts["requests"], counts["steps"], rejects) == (1, 5_000, [])
