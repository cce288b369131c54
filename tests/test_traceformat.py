"""Trace format v1: the catalogue of bad lines and their reasons, timestamps, and the fast path agreeing with the
line validator."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import duckdb
import jsonschema
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specdiag import ingest_trace
from specdiag.ingest import ingest_paths
from specdiag.ingest_read import Block, line_bounds
from specdiag.ingest_trace import parse_block
from specdiag.rejects import REASONS
from specdiag.traceformat import (
    REQUEST_FIELDS,
    REQUEST_REQUIRED,
    STEP_FIELDS,
    STEP_REQUIRED,
    TS_PATTERN,
    Invalid,
    Record,
    parse_ts,
    validate_line,
)

BASE: dict[str, Any] = {
    "request_id": "r1",
    "ts": "2025-03-01T12:00:00Z",
    "deployment": "chat",
    "target_model": "llama-70b@v3",
    "draft_model": "llama-1b@v2",
    "tau": 4,
}
STEP = {"step": 0, "drafted": 4, "accepted": 2}
FLAT = {"event": "step", "request_id": "r1", **STEP}


def req(**changes: Any) -> str:
    obj = {**BASE, **changes}
    return json.dumps({k: v for k, v in obj.items() if v is not DROP})


def flat(**changes: Any) -> str:
    obj = {**FLAT, **changes}
    return json.dumps({k: v for k, v in obj.items() if v is not DROP})


DROP = object()

# (line, expected reason): each line is what a logging bug would really produce
CATALOGUE: list[tuple[str | bytes, str]] = [
    (b'{"request_id": "r\xff\xfe"}', "invalid_utf8"),
    ('{"request_id": "r1", "prompt": "\\ud800"}', "invalid_utf8"),
    ('{"request_id": "r1", "tau": 4', "invalid_json"),
    ("{'request_id': 'r1'}", "invalid_json"),
    (req()[:-1] + ', "latency_ms": NaN}', "invalid_json"),
    ("[1, 2, 3]", "not_object"),
    ('"a request"', "not_object"),
    ("42", "not_object"),
    (req(event="response"), "unknown_event"),
    (req(event=1), "wrong_type"),
    (req(deployment=DROP), "missing_field"),
    (req(deployment=None), "missing_field"),
    (req(request_id=""), "missing_field"),
    (req(ts=DROP), "missing_field"),
    (req(tau=DROP), "missing_field"),
    (req(tau="4"), "wrong_type"),
    (req(tau=4.0), "wrong_type"),
    (req(tau=True), "wrong_type"),
    (req(tau=-1), "out_of_range"),
    (req(tau=2**40), "out_of_range"),
    (req(top_p=0), "out_of_range"),
    (req(top_p=1.5), "out_of_range"),
    (req(temperature=-0.1), "out_of_range"),
    (req(temperature="hot"), "wrong_type"),
    (req(quality=2), "out_of_range"),
    (req(batch_size=0), "out_of_range"),
    (req(prompt_tokens=-5), "out_of_range"),
    (req()[:-1] + ', "latency_ms": 1e400}', "out_of_range"),
    (req(shadow_match="yes"), "wrong_type"),
    (req(prompt=5), "wrong_type"),
    (req(deployment=["a"]), "wrong_type"),
    (req(ts="yesterday"), "bad_timestamp"),
    (req(ts="2025-02-30T00:00:00Z"), "bad_timestamp"),
    (req(ts="2025-03-01T12:00:60Z"), "bad_timestamp"),
    (req(ts="2025-03-01"), "bad_timestamp"),
    (req(ts=1740830400123), "bad_timestamp"),  # milliseconds, not seconds
    (req(ts=-1), "bad_timestamp"),
    (req(ts=True), "bad_timestamp"),
    (req(drafted=3, accepted=4), "accepted_gt_drafted"),
    (req(steps={"step": 0}), "wrong_type"),
    (req(steps=[1]), "bad_step"),
    (req(steps=[STEP, {**STEP, "step": 1, "accepted": 5}]), "bad_step"),
    (req(steps=[{"step": 0, "drafted": 4}]), "bad_step"),
    (req(steps=[{**STEP, "drafted": -1}]), "bad_step"),
    (req(steps=[{**STEP, "verify_ms": "fast"}]), "bad_step"),
    (req(steps=[{**STEP, "draft_probs": [0.5, 1.5, 0.2, 0.1]}]), "bad_step"),
    (req(steps=[{**STEP, "ts": "noon"}]), "bad_step"),
    (req(steps=[STEP, STEP]), "duplicate_step"),
    (flat(accepted=5), "accepted_gt_drafted"),
    (flat(request_id=DROP), "missing_field"),
    (flat(step=DROP), "missing_field"),
    (flat(drafted=-1), "out_of_range"),
    (flat(step=1.5), "wrong_type"),
]


@pytest.mark.parametrize(("line", "reason"), CATALOGUE)
def test_catalogue_reason(line: str | bytes, reason: str) -> None:
    raw = line.encode() if isinstance(line, str) else line
    result = validate_line(raw)
    assert isinstance(result, Invalid), result
    assert result.reason == reason, result.detail
    assert reason in REASONS


def test_bad_step_detail_names_the_step() -> None:
    result = validate_line(req(steps=[STEP, {**STEP, "step": 1, "accepted": 5}]).encode())
    assert isinstance(result, Invalid)
    assert result.detail.startswith("steps[1]: accepted_gt_drafted")


def _block(text: bytes) -> Block:
    starts, ends = line_bounds(text)
    return Block(text, 1, 0, starts, ends)


@pytest.mark.parametrize("piece_lines", [512, 3])
def test_catalogue_in_a_block_of_good_lines(monkeypatch: pytest.MonkeyPatch, piece_lines: int) -> None:
    """Bad lines among good ones: each bad line gets its reason, every good line still becomes a row."""
    monkeypatch.setattr(ingest_trace, "PIECE_LINES", piece_lines)
    lines: list[bytes] = []
    expected: dict[int, str] = {}
    for i, (line, reason) in enumerate(CATALOGUE):
        lines.append(req(request_id=f"good-{i}", steps=[STEP]).encode())
        lines.append(line.encode() if isinstance(line, str) else line)
        expected[len(lines)] = reason
    rows = parse_block(_block(b"\n".join(lines) + b"\n"))
    assert {r.line: r.reason for r in rows.rejects} == expected
    assert rows.requests["request_id"].to_list() == [f"good-{i}" for i in range(len(CATALOGUE))]
    assert len(rows.steps) == len(CATALOGUE)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-01T12:00:00Z", "2025-03-01 12:00:00"),
        ("2025-03-01t12:00:00z", "2025-03-01 12:00:00"),
        ("2025-03-01 12:00:00", "2025-03-01 12:00:00"),  # no offset: UTC
        ("2025-03-01T12:00:00.5+02:00", "2025-03-01 10:00:00.5"),
        ("2025-03-01T12:00:00.123456789-05:30", "2025-03-01 17:30:00.123456"),
        (1740830400, "2025-03-01 12:00:00"),
        (1740830400.25, "2025-03-01 12:00:00.25"),
    ],
)
def test_timestamps(text: str | float, expected: str) -> None:
    """RFC 3339 text and epoch seconds land on the same UTC instant, in both the line and the columnar parser."""
    want = duckdb.sql(f"select epoch_us(timestamp '{expected}')").fetchall()[0][0]
    assert parse_ts(text) == want
    dtype = pl.String if isinstance(text, str) else pl.Float64
    value, ok = ingest_trace.ts_us("ts", dtype)
    got = pl.DataFrame({"ts": [text]}, schema={"ts": dtype}).select(value, ok.alias("ok")).row(0)
    assert got == (want, True)


# --- the fast path and the line validator agree on valid input ---------------------------------------------

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
_num = st.floats(0, 1e6, allow_nan=False) | st.integers(0, 10**6)
_step = st.fixed_dictionaries(
    {"step": st.integers(0, 50), "drafted": st.integers(0, 8)},
    optional={
        "draft_ms": _num,
        "verify_ms": _num,
        "batch_size": st.integers(1, 512),
        "ts": st.integers(0, 2_000_000_000),
        "draft_probs": st.lists(st.floats(0, 1), max_size=4),
        "note": _text,
    },
).map(lambda s: {**s, "accepted": s["drafted"] // 2})
_request = st.fixed_dictionaries(
    {
        "request_id": st.text("abcdef0123", min_size=1, max_size=6),
        "ts": st.sampled_from(["2025-01-02T03:04:05Z", "2025-01-02 03:04:05.25+01:00"])
        | st.floats(0, 4e9, allow_nan=False),
        "deployment": st.sampled_from(["chat", "code"]),
        "target_model": _text,
        "draft_model": _text,
        "tau": st.integers(0, 8),
    },
    optional={
        "temperature": _num,
        "top_p": st.floats(0.01, 1),
        "task": _text,
        "prompt": _text,
        "shadow_match": st.booleans(),
        "quality": st.floats(0, 1),
        "region": _text,
        "steps": st.lists(_step, max_size=4, unique_by=lambda s: s["step"]),
    },
)


def _frames_by_line(lines: list[bytes]) -> tuple[pl.DataFrame, pl.DataFrame]:
    records = []
    for i, raw in enumerate(lines):
        result = validate_line(raw)
        assert isinstance(result, Record), result
        records.append((i + 1, result))
    return ingest_trace._from_records(records)


@settings(max_examples=60, deadline=None)
@given(st.lists(_request, min_size=1, max_size=6))
def test_fast_path_equals_line_validator(records: list[dict[str, Any]]) -> None:
    lines = [json.dumps(r).encode() for r in records]
    rows = parse_block(_block(b"\n".join(lines)))
    assert rows.rejects == []
    slow_requests, slow_steps = _frames_by_line(lines)
    fast_requests = rows.requests.drop("extra")
    assert fast_requests.to_dicts() == slow_requests.drop("extra").to_dicts()
    # extra keeps the same values (number formatting may differ: 1 vs 1.0)
    for fast, slow in zip(rows.requests["extra"].to_list(), slow_requests["extra"].to_list()):
        assert (json.loads(fast) if fast else None) == (json.loads(slow) if slow else None)
    key = ["line", "step"]
    assert rows.steps.drop("extra").sort(key).to_dicts() == slow_steps.drop("extra").sort(key).to_dicts()


# --- the documented contract: docs/trace-format.md and its JSON Schema ------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _doc_example_lines() -> list[str]:
    text = (DOCS / "trace-format.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)```", text, flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_doc_examples_validate_against_schema_and_ingest_cleanly(tmp_path: Path) -> None:
    schema = json.loads((DOCS / "trace-format.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    lines = _doc_example_lines()
    assert len(lines) >= 6
    for line in lines:
        validator.validate(json.loads(line))
        assert isinstance(validate_line(line.encode()), Record)
    f = tmp_path / "doc.jsonl"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    stats = ingest_paths([f], db=tmp_path / "doc.duckdb", progress=False)
    assert (stats.rejected, stats.duplicates, stats.stored_lines) == (0, 0, len(lines))


def test_schema_lists_the_validator_fields() -> None:
    schema = json.loads((DOCS / "trace-format.schema.json").read_text(encoding="utf-8"))
    defs = schema["$defs"]
    assert set(defs["request"]["properties"]) == set(REQUEST_FIELDS)
    assert defs["request"]["required"] == list(REQUEST_REQUIRED)
    assert set(defs["step"]["properties"]) == set(STEP_FIELDS)
    assert defs["step"]["required"] == list(STEP_REQUIRED)


def _schema_can_express(line: str | bytes, reason: str) -> bool:
    """JSON Schema cannot see JSON syntax or encoding, compare two fields, know month lengths or leap seconds,
    tell 4.0 from 4, or require a finite number; the validator checks those."""
    if isinstance(line, bytes) or reason in {
        "invalid_json",
        "invalid_utf8",
        "accepted_gt_drafted",
        "duplicate_step",
    }:
        return False
    obj = json.loads(line)
    steps = obj.get("steps") if isinstance(obj, dict) else None
    if (
        reason == "bad_step"
        and isinstance(steps, list)
        and any(isinstance(s, dict) and s.get("accepted", 0) > s.get("drafted", 99) for s in steps)
    ):
        return False
    return not ('"tau": 4.0' in line or "2025-02-30" in line or "1e400" in line)


@pytest.mark.parametrize(("line", "reason"), [c for c in CATALOGUE if _schema_can_express(*c)])
def test_schema_rejects_the_catalogue_lines_it_can_express(line: str, reason: str) -> None:
    schema = json.loads((DOCS / "trace-format.schema.json").read_text(encoding="utf-8"))
    assert not jsonschema.Draft202012Validator(schema).is_valid(json.loads(line))


def test_every_reason_is_documented() -> None:
    text = (DOCS / "trace-format.md").read_text(encoding="utf-8")
    for reason in REASONS:
        assert f"| `{reason}` |" in text


def test_a_number_too_large_for_a_double_says_so() -> None:
    """1e400 reads as infinity: the reason named the bound it broke as "[0, inf]", which inf is inside."""
    line = req().rstrip().removesuffix("}").encode() + b', "latency_ms": 1e400}'
    got = validate_line(line)
    assert isinstance(got, Invalid) and got.reason == "out_of_range"
    assert got.detail == "latency_ms is too large to be a finite number"


def test_epoch_micro_and_nanoseconds_are_bad_timestamps_not_a_crash() -> None:
    """A ts logged in µs or ns (or any number whose microseconds pass int64) made the fast path's cast fail for the
    whole block (polars InvalidOperationError, ingest aborted); a huge integer crashed the validator (OverflowError)."""
    bad = [1740830400 * 10**6, 1740830400 * 10**9, 1e20, -1e30]
    lines = [req(request_id="good").encode()] + [
        req(request_id=f"b{i}", ts=t).encode() for i, t in enumerate(bad)
    ]
    rows = parse_block(_block(b"\n".join(lines) + b"\n"))
    assert rows.requests["request_id"].to_list() == ["good"]
    assert [r.reason for r in rows.rejects] == ["bad_timestamp"] * len(bad)
    got = validate_line(req().encode().replace(b'"ts": "2025-03-01T12:00:00Z"', b'"ts": 1' + b"0" * 400))
    assert isinstance(got, Invalid) and got.reason == "bad_timestamp"


@pytest.mark.parametrize("name", ["temperature", "latency_ms", "quality", "tau"])
def test_an_integer_too_large_for_a_double_is_out_of_range(name: str) -> None:
    """10**400 is a JSON integer: math.isfinite raised OverflowError on it and ingest crashed."""
    line = req().rstrip().removesuffix("}").encode() + f', "{name}": 1{"0" * 400}}}'.encode()
    got = validate_line(line)
    assert isinstance(got, Invalid) and got.reason == "out_of_range", got


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0001-01-01T00:00:00+01:00", -62135600400000000), ("9999-12-31T23:59:59-01:00", 253402304399000000)],
)
def test_an_offset_past_the_ends_of_the_calendar(text: str, expected: int) -> None:
    """Valid RFC 3339 whose UTC instant falls in year 0 or 10000: the fast path stored it, the validator crashed
    (datetime OverflowError), so the same line ingested or crashed depending on its neighbours."""
    assert parse_ts(text) == expected
    value, ok = ingest_trace.ts_us("ts", pl.String)
    assert pl.DataFrame({"ts": [text]}).select(value, ok.alias("ok")).row(0) == (expected, True)
    lines = [req(ts=text).encode(), b"{bad"]  # the bad line sends the block to the validator
    rows = parse_block(_block(b"\n".join(lines) + b"\n"))
    assert rows.requests["ts_us"].to_list() == [expected]


def test_timestamp_digits_are_ascii() -> None:
    """RFC 3339 digits are ASCII; Python's \\d took Arabic-Indic digits, which the schema (ECMA 262 regex) refuses."""
    text = "\u0662\u0660\u0662\u0665-03-01T12:00:00Z"
    got = validate_line(req(ts=text).encode())
    assert isinstance(got, Invalid) and got.reason == "bad_timestamp"
    schema = json.loads((DOCS / "trace-format.schema.json").read_text(encoding="utf-8"))
    assert not jsonschema.Draft202012Validator(schema).is_valid(json.loads(req(ts=text)))
    assert schema["$defs"]["request"]["properties"]["ts"]["anyOf"][0]["pattern"] == TS_PATTERN


def test_fast_path_keeps_extra_fields_as_written() -> None:
    """The columnar reader merges a field's types over the block: an integer became a double (3 -> 3.0, digits
    past 2**53 lost), an object got every key seen in the block (null where the line had none), and polars renamed
    an empty key to column_<i>. Rows whose extra it would write differently go to the line validator."""
    lines = [
        req(request_id="a", score=3, meta={"a": 1}, big=2**54 + 1, steps=[{**STEP, "m": {"x": 1}, "v": 2}]),
        req(request_id="b", score=3.5, meta={"b": 2}, big=1.5, steps=[{**STEP, "m": {"y": 1}, "v": 2.5}]),
        flat(request_id="a", step=1, m={"x": 1}, v=4),
        flat(request_id="a", step=2, m={"y": 1}, v=0.5),
        req(request_id="c", **{"": 1}),
    ]
    raw = [line.encode() for line in lines]
    rows = parse_block(_block(b"\n".join(raw) + b"\n"))
    slow_requests, slow_steps = _frames_by_line(raw)
    assert rows.requests["extra"].to_list() == slow_requests["extra"].to_list()
    assert rows.requests["extra"].to_list()[0] == '{"score":3,"meta":{"a":1},"big":18014398509481985}'
    assert rows.requests["extra"].to_list()[2] == '{"":1}'
    key = ["line", "step"]
    assert rows.steps.sort(key)["extra"].to_list() == slow_steps.sort(key)["extra"].to_list()


def test_an_extra_number_too_large_for_a_double_is_rejected_by_both_paths() -> None:
    """An extra ``1e400`` was kept as ``Infinity`` (not JSON) by the validator and as null by the block path."""
    raw = [
        req(request_id="a", x=1.5).encode(),
        req(request_id="b", x=0).replace('"x": 0', '"x": 1e400').encode(),
    ]
    got = validate_line(raw[1])
    assert isinstance(got, Invalid) and got.reason == "out_of_range"
    rows = parse_block(_block(b"\n".join(raw) + b"\n"))
    assert rows.requests["request_id"].to_list() == ["a"]
    assert [r.reason for r in rows.rejects] == ["out_of_range"]
