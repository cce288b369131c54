"""Inputs that once crashed the process inside pyarrow's JSON reader are rejected line by line instead."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
