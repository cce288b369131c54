"""The one-pass DuckDB path stores exactly what the block path stores, and hands back every file it cannot prove.

Each test ingests the same files twice, once as `ingest` does (the one-pass path where it proves the file clean)
and once with that path switched off, and compares every stored row, the ledger counts and the rejects.
"""

from __future__ import annotations

import gzip
import json
import math
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specdiag import ingest_duckdb
from specdiag.ingest import IngestStats, ingest_paths

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LEDGER = "lines, stored_lines, requests, steps, duplicates, blank, rejected, other_lines"


def request(rid: str, **fields: Any) -> dict[str, Any]:
    return {
        "request_id": rid,
        "ts": "2025-03-01T12:00:00Z",
        "deployment": "chat",
        "target_model": "llama-70b@v3",
        "draft_model": "llama-1b@v2",
        "tau": 4,
        **fields,
    }


def text_of(lines: list[Any]) -> str:
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)


def _block_path_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ingest_duckdb.NotProvable("switched off by the test")

    monkeypatch.setattr(ingest_duckdb, "prepare", refuse)


def _rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {
            "requests": con.execute("select * from requests order by request_id").fetchall(),
            "steps": con.execute("select * from steps order by request_id, step").fetchall(),
            "rejects": con.execute(
                "select file_id, path, line, byte_offset, reason, detail, raw from rejects order by path, line"
            ).fetchall(),
            "ledger": con.execute(
                f"select file_id, path, {LEDGER} from ingest_ledger order by path"
            ).fetchall(),
        }
    finally:
        con.close()


def _same(a: Any, b: Any) -> bool:
    """Equal, floats to 1e-12 relative (request totals of draft_ms / verify_ms are sums in another order)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def ingest_both(
    files: list[Path], tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[IngestStats], list[IngestStats]]:
    """Ingest ``files`` in turn into two fresh stores, by default and with the one-pass path off; assert that both
    stores hold the same rows. Returns the per-call stats of each."""
    fast_db, block_db = tmp / "fast.duckdb", tmp / "blocks.duckdb"
    fast = [ingest_paths([f], db=fast_db, progress=False) for f in files]
    with monkeypatch.context() as m:
        _block_path_only(m)
        blocks = [ingest_paths([f], db=block_db, progress=False) for f in files]
    got, want = _rows(fast_db), _rows(block_db)
    for table in want:
        assert len(got[table]) == len(want[table]), table
        for g, w in zip(got[table], want[table]):
            assert _same(g, w), (table, g, w)
    for f, b in zip(fast, blocks):
        assert f.as_json() | {"per_file": None} == b.as_json() | {"per_file": None}
    return fast, blocks


def readers(stats: list[IngestStats]) -> list[str]:
    return [f.reader for s in stats for f in s.per_file]


def test_example_traces_store_the_same_rows_either_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [EXAMPLES / n for n in ("flat-steps.jsonl", "nested-steps.jsonl", "token-detail.jsonl.gz")]
    fast, _ = ingest_both(files, tmp_path, monkeypatch)
    # nested-steps.jsonl has a field outside the format (kept in `extra`), which the block path keeps
    assert readers(fast) == ["duckdb", "blocks", "duckdb"]


def test_blank_lines_crlf_duplicates_and_totals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[Any] = [
        "",
        request(
            "a",
            steps=[
                {"step": 0, "drafted": 4, "accepted": 3, "verify_ms": 20.0},
                {"step": 1, "drafted": 4, "accepted": 0},
            ],
        ),
        "  \t",
        {"event": "step", "request_id": "d", "step": 0, "drafted": 2, "accepted": 2, "draft_ms": 1.5},
        request("c", drafted=10, accepted=7, verify_steps=3),
        request("a", tau=2),  # a duplicate: the first line wins
        request("d", ts=1740830400.25),
        {"event": "step", "request_id": "d", "step": 0, "drafted": 3, "accepted": 1},  # a repeated key
        "",
    ]
    f = tmp_path / "t.jsonl"
    f.write_bytes(text_of(lines).replace("\n", "\r\n").encode())
    fast, _ = ingest_both([f], tmp_path, monkeypatch)
    assert readers(fast) == ["duckdb"]
    s = fast[0]
    assert (s.lines, s.blank, s.requests, s.steps, s.duplicates) == (9, 3, 3, 3, 2)


def test_a_store_with_earlier_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = tmp_path / "1.jsonl"
    first.write_text(text_of([request("a", steps=[{"step": 0, "drafted": 2, "accepted": 1}]), request("b")]))
    second = tmp_path / "2.jsonl"
    second.write_text(
        text_of(
            [
                request("a", steps=[{"step": 0, "drafted": 2, "accepted": 2}]),  # stored already
                {"event": "step", "request_id": "a", "step": 0, "drafted": 9, "accepted": 9},  # key stored
                {
                    "event": "step",
                    "request_id": "a",
                    "step": 1,
                    "drafted": 2,
                    "accepted": 0,
                },  # new: totals change
                {"event": "step", "request_id": "b", "step": 0, "drafted": 3, "accepted": 3},
                request("e", steps=[{"step": 0, "drafted": 1, "accepted": 1}]),
            ]
        )
    )
    fast, _ = ingest_both([first, second, second], tmp_path, monkeypatch)
    assert readers(fast) == ["duckdb", "duckdb", ""]  # the third is skipped (same content)
    assert fast[1].duplicates == 2 and fast[2].skipped == 1


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_compressed_files(compress: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = text_of(
        [request(f"r{i}", steps=[{"step": 0, "drafted": 3, "accepted": i % 4}]) for i in range(50)]
    ).encode()
    f = tmp_path / "t.jsonl.x"  # no telling extension: the magic bytes decide
    f.write_bytes(gzip.compress(raw) if compress == "gzip" else zstandard.ZstdCompressor().compress(raw))
    fast, _ = ingest_both([f], tmp_path, monkeypatch)
    assert readers(fast) == ["duckdb"] and fast[0].requests == 50


# Lines DuckDB's reader would accept (or coerce) that the format refuses or keeps differently: each file goes to
# the block path, which rejects the line with its reason (or keeps the field in `extra`).
LENIENT = {
    "a trailing comma": ('{"request_id": "x", "tau": 1,}', "invalid_json"),
    "NaN": (json.dumps(request("x", temperature=0.5)).replace("0.5", "NaN"), "invalid_json"),
    "Infinity in a step": (
        json.dumps(request("x", steps=[{"step": 0, "drafted": 1, "accepted": 1, "draft_ms": 2.5}])).replace(
            "2.5", "Infinity"
        ),
        "invalid_json",
    ),
    "3.5 for an int": (json.dumps(request("x", tau=3.5)), "wrong_type"),
    "3.0 for an int": (json.dumps(request("x", tau=3.0)), "wrong_type"),
    "text for an int": (json.dumps(request("x", tau="3")), "wrong_type"),
    "a number for text": (json.dumps(request("x", deployment=5)), "wrong_type"),
    "true for a number": (json.dumps(request("x", temperature=True)), "wrong_type"),
    "a step index as text": (
        json.dumps(request("x", steps=[{"step": "0", "drafted": 1, "accepted": 1}])),
        "bad_step",
    ),
    "a null step": (json.dumps(request("x", steps=[None])), "bad_step"),
    "a repeated step index": (
        json.dumps(request("x", steps=[{"step": 0, "drafted": 1, "accepted": 1}] * 2)),
        "duplicate_step",
    ),
    "a byte order mark": ("\ufeff" + json.dumps(request("x")), "invalid_json"),
    "a form feed": (json.dumps(request("x")).replace(", ", ",\f"), "invalid_json"),
    "a null line": ("null", "not_object"),
    "two objects on a line": (json.dumps(request("x")) + json.dumps(request("y")), "invalid_json"),
    "accepted > drafted": (
        json.dumps(request("x", steps=[{"step": 0, "drafted": 1, "accepted": 2}])),
        "bad_step",
    ),
    "a bad timestamp": (json.dumps(request("x", ts="2025-02-30T00:00:00Z")), "bad_timestamp"),
    "a step-only field on a request": (json.dumps(request("x", step=3)), None),
    "a field outside the format": (json.dumps(request("x", region="eu")), None),
    "a step field outside the format": (
        json.dumps(request("x", steps=[{"step": 0, "drafted": 1, "accepted": 1, "seen": True}])),
        None,
    ),
    "a duplicate key": (json.dumps(request("x")).replace('"tau": 4', '"tau": 4, "tau": 5'), None),
}


@pytest.mark.parametrize("name", list(LENIENT))
def test_what_the_format_refuses_goes_to_the_block_path(name: str, tmp_path: Path) -> None:
    line, reason = LENIENT[name]
    f = tmp_path / "t.jsonl"
    f.write_text(text_of([request("ok1"), line, request("ok2")]), encoding="utf-8")
    stats = ingest_paths([f], db=tmp_path / "s.duckdb", progress=False)
    assert readers([stats]) == ["blocks"]  # so the rows are the block path's by construction
    if reason is None:  # a valid line, kept (extra fields, the last of duplicate keys) by the block path
        assert stats.rejected == 0 and stats.requests == 3
    else:
        rejects = _rows(tmp_path / "s.duckdb")["rejects"]
        assert [(r[2], r[4]) for r in rejects] == [(2, reason)]
        assert stats.requests == 2


def test_one_bad_line_is_rejected_alone_with_its_line_number(tmp_path: Path) -> None:
    lines: list[Any] = [request(f"r{i}", steps=[{"step": 0, "drafted": 2, "accepted": 1}]) for i in range(30)]
    lines[17] = request("bad", steps=[{"step": 0, "drafted": 2, "accepted": 5}])
    f = tmp_path / "t.jsonl"
    f.write_text(text_of(lines))
    stats = ingest_paths([f], db=tmp_path / "s.duckdb", progress=False)
    assert (stats.requests, stats.rejected, readers([stats])) == (29, 1, ["blocks"])
    rejects = _rows(tmp_path / "s.duckdb")["rejects"]
    assert [(r[2], r[4]) for r in rejects] == [(18, "bad_step")]


# ---- property: any clean file stores the same rows by either path, and takes the one-pass path ----

NAMES = st.sampled_from(["a", "b", "c", "d", "é-ü", 'q"uote', "back\\slash", "tab\tx", "z\u0000", "🙂"])
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
NUMS = st.one_of(
    st.integers(0, 10**6), st.floats(0, 1e6, allow_nan=False, allow_infinity=False)
)  # number fields take ints and decimals
PROB = st.floats(0, 1, allow_nan=False)


@st.composite
def timestamps(draw: Callable[..., Any]) -> Any:
    if draw(st.booleans()):  # epoch seconds, int or decimal
        return draw(st.one_of(st.integers(0, 4_000_000_000), st.floats(0, 4e9, allow_nan=False)))
    t = draw(st.datetimes(datetime(1970, 1, 2), datetime(2500, 1, 1)))
    digits = draw(st.integers(0, 9))
    frac = f".{t.microsecond:06d}{draw(st.integers(0, 999)):03d}"[: digits + 1] if digits else ""
    sep = draw(st.sampled_from(["T", "t", " "]))
    off = draw(st.sampled_from(["", "Z", "z", "+05:30", "-11:00", "+00:00"]))
    return f"{t:%Y-%m-%d}{sep}{t:%H:%M:%S}{frac}{off}"


@st.composite
def steps(draw: Callable[..., Any], indices: Any) -> dict[str, Any]:
    drafted = draw(st.integers(0, 8))
    out: dict[str, Any] = {
        "step": draw(indices),
        "drafted": drafted,
        "accepted": draw(st.integers(0, drafted)),
    }
    optional = {
        "draft_ms": NUMS,
        "verify_ms": NUMS,
        "batch_size": st.integers(1, 64),
        "ts": timestamps(),
        "draft_token_ids": st.lists(st.integers(0, 50_000), max_size=4),
        "draft_probs": st.lists(PROB, max_size=4),
        "target_probs": st.lists(st.one_of(PROB, st.integers(0, 1)), max_size=4),
    }
    for name, strategy in optional.items():
        if draw(st.integers(0, 3)) == 0:
            out[name] = draw(st.one_of(strategy, st.none()))
    return out


@st.composite
def requests(draw: Callable[..., Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "request_id": draw(NAMES),
        "ts": draw(timestamps()),
        "deployment": draw(st.text(min_size=1, max_size=8)),
        "target_model": draw(TEXT),
        "draft_model": draw(TEXT),
        "tau": draw(st.integers(0, 8)),
    }
    if draw(st.booleans()):
        out["event"] = "request"
    optional = {
        "temperature": NUMS,
        "top_p": st.floats(0.01, 1),
        "task": TEXT,
        "acceptance": TEXT,
        "prompt": TEXT,
        "output": TEXT,
        "prompt_tokens": st.integers(0, 10**12),
        "output_tokens": st.integers(0, 10**6),
        "latency_ms": NUMS,
        "ttft_ms": NUMS,
        "batch_size": st.integers(1, 512),
        "quality": PROB,
        "shadow_match": st.booleans(),
        "verify_steps": st.integers(0, 100),
        "drafted": st.integers(100, 200),
        "accepted": st.integers(0, 100),
        "draft_ms": NUMS,
        "verify_ms": NUMS,
    }
    for name, strategy in optional.items():
        if draw(st.integers(0, 3)) == 0:
            out[name] = draw(st.one_of(strategy, st.none()))
    if draw(st.booleans()):
        nested = draw(st.lists(steps(st.integers(0, 20)), max_size=5, unique_by=lambda s: s["step"]))
        out["steps"] = nested
    return out


@st.composite
def flat_steps(draw: Callable[..., Any]) -> dict[str, Any]:
    # flat indices from 100 up: a key given both nested and flat in one file is left to the block path
    return {"event": "step", "request_id": draw(NAMES), **draw(steps(st.integers(100, 103)))}


@st.composite
def trace_files(draw: Callable[..., Any]) -> bytes:
    lines = draw(
        st.lists(
            st.one_of(requests(), requests(), flat_steps(), st.sampled_from(["", " ", "\t\r"])),
            min_size=1,
            max_size=12,
        )
    )
    if not any(isinstance(x, dict) for x in lines):
        lines.append(draw(requests()))
    compact = draw(st.booleans())
    ascii_only = draw(st.booleans())
    text = "".join(
        (
            x
            if isinstance(x, str)
            else json.dumps(x, ensure_ascii=ascii_only, separators=(",", ":") if compact else None)
        )
        + "\n"
        for x in lines
    )
    if draw(st.booleans()):
        text = text.rstrip("\n")  # no final newline
    return text.encode("utf-8")


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(first=trace_files(), second=trace_files())
def test_clean_files_store_the_same_rows_by_either_path(
    first: bytes, second: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "1.jsonl").write_bytes(first)
        (d / "2.jsonl").write_bytes(second)
        fast, _ = ingest_both([d / "1.jsonl", d / "2.jsonl"], d, monkeypatch)
        why = [f.why_blocks for s in fast for f in s.per_file]
        assert readers(fast) in (["duckdb", "duckdb"], ["duckdb", ""]), why  # "": the same content, skipped
