"""The two pyarrow readers of the fast path give the same rows: types inferred (cheaper) or declared (strict).

The inferring reader is used when every field it typed fits the format; anything it cannot judge (3 against 3.0, a
date against its text) falls back to the declared-schema reader. Either way a block must become the same rows.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from polars.testing import assert_frame_equal

from specdiag import ingest_trace
from specdiag.ingest_read import Block, line_bounds

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _block(lines: list[Any]) -> Block:
    data = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines).encode()
    starts, ends = line_bounds(data)
    return Block(data, 1, 0, starts, ends)


def _rows(block: Block, inferred: bool, monkeypatch: pytest.MonkeyPatch) -> ingest_trace.BlockRows:
    with monkeypatch.context() as m:
        if not inferred:
            m.setattr(ingest_trace, "_read_inferred", lambda data: None)
        return ingest_trace.parse_block(block)


def _base(rid: str, **fields: Any) -> dict[str, Any]:
    return {
        "request_id": rid,
        "ts": "2025-03-01T12:00:00.250Z",
        "deployment": "chat",
        "target_model": "t@1",
        "draft_model": "d@1",
        "tau": 3,
        **fields,
    }


STEP = {"step": 0, "drafted": 3, "accepted": 2, "draft_ms": 1, "verify_ms": 2.5}
CASES = {
    "numbers written as ints for number fields": [
        _base("a", temperature=0, top_p=1, latency_ms=12, steps=[STEP])
    ],
    "epoch-second timestamps, in steps too": [
        _base("a", ts=1740830400, steps=[{**STEP, "ts": 1740830400.5}]),
        _base("b", ts=1740830401.25),
    ],
    "only flat steps and requests without steps": [
        _base("a"),
        {"event": "step", "request_id": "a", **STEP},
        {"event": "step", "request_id": "a", **STEP, "step": 1},
    ],
    "empty step lists": [_base("a", steps=[]), _base("b", steps=[])],
    "token detail and extra fields": [
        _base(
            "a",
            region="eu",
            meta={"k": [1, 2]},
            steps=[{**STEP, "draft_token_ids": [5, 6, 7], "draft_probs": [1, 0.5, 0.25], "x": True}],
        )
    ],
    "an int field written 3.0 (a reject)": [_base("a"), _base("b", tau=3.0)],
    "a date-like extra field": [_base("a", day="2025-03-01", steps=[{**STEP, "seen": "2025-03-02"}])],
    "a bad step inside a request": [
        _base("a", steps=[STEP, {**STEP, "accepted": 9}]),
        _base("b", steps=[STEP]),
    ],
    "null and missing optional fields": [_base("a", task=None, quality=None), _base("b", shadow_match=True)],
}


@pytest.mark.parametrize("name", list(CASES))
def test_inferred_and_declared_readers_give_the_same_rows(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    block = _block(CASES[name])
    fast, strict = _rows(block, True, monkeypatch), _rows(block, False, monkeypatch)
    assert_frame_equal(fast.requests, strict.requests)
    assert_frame_equal(fast.steps, strict.steps)
    assert [(r.line, r.reason) for r in fast.rejects] == [(r.line, r.reason) for r in strict.rejects]


def test_example_traces_read_the_same_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    for path in sorted(EXAMPLES.glob("*.jsonl*")):
        raw = path.read_bytes()
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        starts, ends = line_bounds(data)
        block = Block(data, 1, 0, starts, ends)
        fast, strict = _rows(block, True, monkeypatch), _rows(block, False, monkeypatch)
        assert_frame_equal(fast.requests, strict.requests)
        assert_frame_equal(fast.steps, strict.steps)
        assert len(fast.rejects) == len(strict.rejects)


def test_inferred_reader_is_used_for_clean_input_and_refuses_what_it_cannot_judge() -> None:
    clean = _block([_base("a", temperature=0.7, steps=[STEP])])
    assert ingest_trace._read_inferred(clean.data) is not None
    for bad in (
        _base("a", tau=3.0),
        _base("a", day="2025-03-01"),
        _base("a", steps=[{**STEP, "ts": "2025-03-01"}]),
    ):
        assert ingest_trace._read_inferred(_block([bad]).data) is None, bad


def test_integers_beyond_int64_in_extra_fields_are_kept_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyarrow reads an integer past int64 as a double (12345678901234567890 -> 1.2345678901234567e19): a block
    holding one goes to the line validator, which keeps the number as written."""
    big, bigger = 12345678901234567890, 18446744073709551615
    block = _block(
        [_base(f"r{i}", steps=[STEP]) for i in range(3)]
        + [_base("big", trace_id=big, steps=[{**STEP, "span": bigger}]), _base("neg", trace_id=-big)]
    )
    rows = ingest_trace.parse_block(block)
    with monkeypatch.context() as m:  # every line through the validator: the reference
        m.setattr(ingest_trace, "_read_arrow", lambda data, starts=None: None)
        reference = ingest_trace.parse_block(block)
    assert_frame_equal(rows.requests, reference.requests)
    assert_frame_equal(rows.steps, reference.steps)
    extra = dict(zip(rows.requests["request_id"], rows.requests["extra"]))
    assert json.loads(extra["big"]) == {"trace_id": big} and json.loads(extra["neg"]) == {"trace_id": -big}
    assert json.loads(rows.steps.filter(rows.steps["request_id"] == "big")["extra"][0]) == {"span": bigger}
    assert extra["r0"] is None and not rows.rejects


def test_zstd_frame_walker_knows_where_frames_end() -> None:
    """Cut anywhere, a zstd stream is whole exactly at a frame boundary: frames with and without content size and
    checksum, RLE, raw and compressed blocks, an empty frame, a skippable frame, fed in pieces of any size."""
    import random

    import zstandard

    from specdiag.ingest_read import _ZstdFrameEnds

    rng = random.Random(0)
    for _ in range(12):
        frames = []
        for _k in range(rng.randint(1, 3)):
            size = rng.choice([0, 1, 300, 200_000])
            data = rng.randbytes(min(size, 2_000)) + b"ab" * max(0, (size - 2_000) // 2)
            if rng.random() < 0.3:
                data = b"x" * size  # RLE blocks
            c = zstandard.ZstdCompressor(
                level=rng.choice([1, 19]),
                write_checksum=rng.random() < 0.5,
                write_content_size=rng.random() < 0.5,
            )
            if rng.random() < 0.5:
                frames.append(c.compress(data))
            else:
                stream = c.compressobj()
                frames.append(stream.compress(data) + stream.flush())
            if rng.random() < 0.3:
                frames.append((0x184D2A53).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"hello")
        whole = b"".join(frames)
        bounds = {sum(len(f) for f in frames[:i]) for i in range(len(frames) + 1)}
        cuts = range(len(whole) + 1) if len(whole) < 2_000 else rng.sample(range(len(whole) + 1), 600)
        for cut in set(cuts) | bounds:
            walker = _ZstdFrameEnds()
            i = 0
            while i < cut:
                j = min(cut, i + rng.randint(1, 70_000))
                walker.feed(whole[i:j])
                i = j
            assert walker.between_frames == (cut in bounds), (cut, sorted(bounds))
