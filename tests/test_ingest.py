"""`specdiag ingest` end to end: counts, duplicates, idempotence, compression, stdin, redaction, errors."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import re
import shutil
import zlib
from pathlib import Path
from typing import Any

import duckdb
import pytest
import zstandard

from specdiag.ingest import ingest_paths

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "traces"
TRACE_EXAMPLES = [EXAMPLES / n for n in ("flat-steps.jsonl", "nested-steps.jsonl", "token-detail.jsonl.gz")]
KEYS = ("files", "requests", "steps", "rejected", "duplicates", "blank")


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


def write_lines(path: Path, objs: list[Any], final_newline: bool = True) -> Path:
    text = "\n".join(o if isinstance(o, str) else json.dumps(o) for o in objs)
    path.write_text(text + ("\n" if final_newline else ""), encoding="utf-8")
    return path


def ingest_json(run: Any, *args: Any, input: bytes | str | None = None) -> dict[str, Any]:
    result = run("ingest", *args, "--json", input=input)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def query(db: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def dump(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    tables = ("requests", "steps", "rejects", "windows")
    return {
        t: sorted(
            query(db, f"select * exclude (file_id) from {t}" if t != "steps" else f"select * from {t}"),
            key=repr,
        )
        for t in tables
    }


def test_examples_ingest_with_zero_rejects(run: Any, db: Path) -> None:
    out = ingest_json(run, *TRACE_EXAMPLES, "--db", db)
    assert set(KEYS) <= set(out)
    assert out["files"] == 3 and out["rejected"] == 0 and out["duplicates"] == 0
    assert out["requests"] == query(db, "select count(*) from requests")[0][0] == 23
    assert out["steps"] == query(db, "select count(*) from steps")[0][0]
    # every line is accounted for in the ledger
    assert query(
        db,
        "select count(*) from ingest_ledger where lines <> stored_lines + duplicates + blank + rejected + other_lines",
    ) == [(0,)]


def test_request_totals_from_nested_and_flat_steps(run: Any, db: Path, tmp_path: Path) -> None:
    f = write_lines(
        tmp_path / "t.jsonl",
        [
            request(
                "a",
                steps=[
                    {"step": 0, "drafted": 4, "accepted": 3, "verify_ms": 20.0},
                    {"step": 1, "drafted": 4, "accepted": 0},
                ],
            ),
            request("b", tau=0, steps=[{"step": 0, "drafted": 0, "accepted": 0}]),
            request("c", drafted=10, accepted=7, verify_steps=3),  # totals logged without steps are kept
            {"event": "step", "request_id": "d", "step": 0, "drafted": 2, "accepted": 2, "draft_ms": 1.5},
            request("d"),
        ],
    )
    out = ingest_json(run, f, "--db", db)
    assert (out["requests"], out["steps"], out["duplicates"]) == (4, 4, 0)
    rows = query(
        db, "select request_id, verify_steps, drafted, accepted, draft_ms, verify_ms from requests order by 1"
    )
    assert rows == [
        ("a", 2, 8, 3, None, 20.0),
        ("b", 0, 0, 0, None, None),  # tau = 0: decode steps, no verify steps
        ("c", 3, 10, 7, None, None),
        ("d", 1, 2, 2, 1.5, None),
    ]
    # a flat step in a later file updates the totals of a request stored earlier
    g = write_lines(
        tmp_path / "u.jsonl", [{"event": "step", "request_id": "d", "step": 1, "drafted": 2, "accepted": 1}]
    )
    ingest_json(run, g, "--db", db)
    assert query(db, "select verify_steps, drafted, accepted from requests where request_id = 'd'") == [
        (2, 4, 3)
    ]


def test_duplicates_first_write_wins(run: Any, db: Path, tmp_path: Path) -> None:
    first = write_lines(
        tmp_path / "1.jsonl", [request("a", task="first", steps=[{"step": 0, "drafted": 4, "accepted": 1}])]
    )
    second = write_lines(
        tmp_path / "2.jsonl",
        [
            request("a", task="second", steps=[{"step": 0, "drafted": 4, "accepted": 4}]),  # already stored
            request("b"),
            request("b", task="again"),  # repeated within the file
            {"event": "step", "request_id": "b", "step": 0, "drafted": 1, "accepted": 1},
            {
                "event": "step",
                "request_id": "b",
                "step": 0,
                "drafted": 1,
                "accepted": 0,
            },  # same (request_id, step)
        ],
    )
    ingest_json(run, first, "--db", db)
    out = ingest_json(run, second, "--db", db)
    assert (out["requests"], out["steps"], out["duplicates"]) == (1, 1, 3)
    assert query(db, "select request_id, task, accepted from requests order by 1") == [
        ("a", "first", 1),
        ("b", None, 1),
    ]


def test_small_blocks_and_row_groups_store_the_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Steps wait in the file's appender until they fill a whole row group, so the dedupe of a later block must see
    # them: flat steps before and after their request, repeated across blocks, a request id repeated far apart.
    import functools
    import random

    from specdiag import ingest, ingest_read, ingest_store

    rng = random.Random(7)
    lines: list[Any] = []
    for i in range(60):
        rid = f"r{rng.randrange(40)}"  # ids repeat: later lines are duplicates
        n = rng.randrange(0, 6)
        steps = [{"step": k, "drafted": 3, "accepted": rng.randrange(4)} for k in range(n)]
        if i % 3 == 0:  # flat step lines, some before the request line, some repeated
            flat = [{"event": "step", "request_id": rid, **s} for s in steps]
            flat.append(
                {
                    "event": "step",
                    "request_id": rid,
                    "step": n + rng.randrange(3),
                    "drafted": 2,
                    "accepted": 1,
                }
            )
            cut = rng.randrange(len(flat) + 1)
            lines += [*flat[:cut], request(rid, task=str(i)), *flat[cut:], rng.choice(flat)]
        else:
            lines.append(request(rid, task=str(i), steps=steps))
    f = write_lines(tmp_path / "t.jsonl", lines)
    dbs = [tmp_path / "default.duckdb", tmp_path / "small.duckdb"]
    first = ingest_paths([f], db=dbs[0], progress=False)  # a small file: read whole with others (none here)
    monkeypatch.setattr(ingest, "SMALL_FILE_BYTES", -1)  # the block path, in blocks of 300 bytes
    monkeypatch.setattr(ingest_store, "ROW_GROUP_ROWS", 5)
    monkeypatch.setattr(ingest, "read_blocks", functools.partial(ingest_read.read_blocks, block_bytes=300))
    second = ingest_paths([f], db=dbs[1], progress=False)
    assert first.duplicates > 10 and first.steps > 50
    assert (first.requests, first.steps, first.duplicates) == (
        second.requests,
        second.steps,
        second.duplicates,
    )
    assert dump(dbs[0]) == dump(dbs[1])
    assert query(
        dbs[1], "select count(*) from (select request_id, step from steps group by all having count(*) > 1)"
    ) == [(0,)]


def test_steps_are_stored_in_whole_row_groups(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the appender's purpose: a row group that an append leaves part full is rewritten by the checkpoint at close
    import functools

    from specdiag import ingest, ingest_read
    from specdiag.ingest_store import ROW_GROUP_ROWS

    # the block path in blocks of 2 MB: steps left over from one block are appended with the next
    monkeypatch.setattr(ingest, "SMALL_FILE_BYTES", -1)
    monkeypatch.setattr(
        ingest, "read_blocks", functools.partial(ingest_read.read_blocks, block_bytes=2 << 20)
    )

    lines: list[Any] = []
    for r in range(270):
        steps = [{"step": k, "drafted": 2, "accepted": k % 3} for k in range(1000)]
        if r % 10 == 9:  # flat step lines too: a block's steps then come in several pieces
            lines.append(request(f"r{r}"))
            lines += [{"event": "step", "request_id": f"r{r}", **s} for s in steps]
        else:
            lines.append(request(f"r{r}", steps=steps))
    f = write_lines(tmp_path / "t.jsonl", lines)
    stats = ingest_paths([f], db=db, progress=False)
    assert stats.steps == 270_000
    sizes = query(
        db, "select row_group_id, max(count) from pragma_storage_info('steps') group by all order by 1"
    )
    assert [n for _, n in sizes] == [ROW_GROUP_ROWS, ROW_GROUP_ROWS, 270_000 - 2 * ROW_GROUP_ROWS]


def _store_contents(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the store, file ids and line numbers included (the ledger without its clock)."""
    tables = {
        "requests": "select * from requests",
        "steps": "select * from steps",
        "rejects": "select * from rejects",
        "windows": "select * from windows",
        "ledger": "select * exclude (ingested_at) from ingest_ledger",
    }
    return {name: sorted(query(db, sql), key=repr) for name, sql in tables.items()}


def test_small_files_ingested_together_store_what_each_would_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses
    import random

    from specdiag import ingest

    rng = random.Random(11)
    folder = tmp_path / "logs"
    folder.mkdir()
    texts = []
    for _ in range(45):
        lines = []
        for _ in range(rng.randrange(6)):
            rid, kind = f"r{rng.randrange(30)}", rng.random()
            if kind < 0.45:
                steps = [
                    {"step": k, "drafted": 2, "accepted": rng.randrange(3)} for k in range(rng.randrange(4))
                ]
                lines.append(json.dumps(request(rid, task=str(rng.random()), steps=steps)))
            elif kind < 0.7:
                step = {"step": rng.randrange(5), "drafted": 2, "accepted": rng.randrange(3)}
                lines.append(json.dumps({"event": "step", "request_id": rid, **step}))
            elif kind < 0.8:
                lines.append(json.dumps(request(rid, drafted=5, accepted=2)))
            elif kind < 0.88:
                lines.append("  ")
            elif kind < 0.95:
                lines.append(json.dumps(request(rid, tau=-1)))
            else:
                lines.append('{"request_id": "x", oops')
        texts.append("\n".join(lines) + ("\n" if rng.random() < 0.8 else ""))
    texts[7] = texts[3]  # the same content twice
    texts[12] = ""
    for i, text in enumerate(texts):
        (folder / f"{i:03d}.jsonl").write_text(text, encoding="utf-8")
    # between the small files: engine logs (ingested on their own, in order) and trace files over the size limit
    for name in ("sglang-requests.jsonl", "vllm-v0.log"):
        shutil.copy(FIXTURES.parent / "engines" / name, folder / f"020-{name}")
    shutil.copy(EXAMPLES / "flat-steps.jsonl", folder / "030-flat.jsonl")
    groups: list[int] = []
    grouped = ingest.ingest_small_files

    def spy(con: Any, files: list[Any], redact: bool = False) -> Any:
        groups.append(len(files))
        return grouped(con, files, redact)

    monkeypatch.setattr(ingest, "ingest_small_files", spy)
    monkeypatch.setattr(ingest, "SMALL_FILE_BYTES", 2000)
    monkeypatch.setattr(ingest, "BLOCK_BYTES", 4000)  # several groups
    together = ingest_paths([folder], db=tmp_path / "together.duckdb", progress=False)
    assert len(groups) > 3 and max(groups) > 5
    monkeypatch.setattr(ingest, "SMALL_FILE_BYTES", -1)
    alone = ingest_paths([folder], db=tmp_path / "alone.duckdb", progress=False)

    def per_file(stats: Any) -> list[dict[str, Any]]:
        return [
            {**dataclasses.asdict(f), "notes": [re.sub(r"ingested .*", "", n) for n in f.notes]}
            for f in stats.per_file
        ]

    assert together.rejected > 5 and together.duplicates > 5 and together.skipped > 1
    assert per_file(together) == per_file(alone)
    assert _store_contents(tmp_path / "together.duckdb") == _store_contents(tmp_path / "alone.duckdb")


def test_reingest_changes_nothing(run: Any, db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.jsonl.gz"
    copy.write_bytes(gzip.compress((EXAMPLES / "nested-steps.jsonl").read_bytes()))
    ingest_json(run, *TRACE_EXAMPLES, "--db", db)
    before = dump(db)
    again = ingest_json(
        run, *TRACE_EXAMPLES, copy, "--db", db
    )  # same content, compressed, under another name
    assert again["skipped"] == 4 and again["requests"] == again["steps"] == again["rejected"] == 0
    assert dump(db) == before
    assert query(db, "select count(*) from ingest_ledger") == [(3,)]


@pytest.mark.parametrize("small_file_bytes", [1 << 20, -1], ids=["with-small-files", "alone"])
def test_reingest_of_a_plain_file_skips_before_parsing(
    run: Any, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_file_bytes: int
) -> None:
    monkeypatch.setattr("specdiag.ingest.SMALL_FILE_BYTES", small_file_bytes)
    f = tmp_path / "t.jsonl"
    f.write_bytes((EXAMPLES / "nested-steps.jsonl").read_bytes())
    ingest_json(run, f, "--db", db)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a file already in the ledger was parsed again")

    monkeypatch.setattr("specdiag.ingest.parse_block", refuse)
    monkeypatch.setattr("specdiag.ingest.read_whole", refuse)
    again = ingest_json(run, f, "--db", db)
    assert again["skipped"] == 1 and again["requests"] == 0


def test_file_changed_after_hashing_is_stored_under_the_content_read(
    run: Any, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a log still being written: the up-front hash no longer matches what the stream then reads (a file read
    # whole, as small files are, is hashed as read)
    monkeypatch.setattr("specdiag.ingest.SMALL_FILE_BYTES", -1)
    f = write_lines(tmp_path / "t.jsonl", [request("a", steps=[{"step": 0, "drafted": 4, "accepted": 2}])])
    monkeypatch.setattr(
        "specdiag.ingest.prehash", lambda source: hashlib.sha256(b"older content").hexdigest()
    )
    ingest_json(run, f, "--db", db)
    content = hashlib.sha256(f.read_bytes()).hexdigest()
    assert query(db, "select file_id from ingest_ledger") == [(content,)]
    assert query(db, "select file_id, accepted from requests") == [(content, 2)]


def test_bad_lines_are_quarantined_with_location(run: Any, db: Path, tmp_path: Path) -> None:
    good = json.dumps(request("a"))
    f = tmp_path / "t.jsonl"
    f.write_bytes(
        f"{good}\n\n   \n{{oops\n".encode()
        + b"\xff\xfe\n"
        + json.dumps(request("b", tau=-1)).encode()
        + b"\n"
    )
    out = ingest_json(run, f, "--db", db)
    assert (out["requests"], out["blank"], out["rejected"]) == (1, 2, 3)
    rows = query(db, "select path, line, byte_offset, reason, raw from rejects order by line")
    offset = len(good) + 1 + 1 + 4
    assert rows[0] == (str(f), 4, offset, "invalid_json", "{oops")
    assert [r[3] for r in rows] == ["invalid_json", "invalid_utf8", "out_of_range"]
    assert rows[1][2] == offset + 6


def test_summary_names_the_first_rejects_with_file_line_and_reason(
    run: Any, db: Path, tmp_path: Path
) -> None:
    f = tmp_path / "t.jsonl"
    f.write_bytes(
        json.dumps(request("a")).encode() + b"\nnull\n" + json.dumps(request("b", tau=-1)).encode() + b"\n"
    )
    result = run("ingest", f, "--db", db)
    assert result.exit_code == 0
    assert f"rejected {f}:2: not_object (the line is a JSON null, not an object)" in result.stderr
    assert f"rejected {f}:3: out_of_range" in result.stderr


def test_raw_text_kept_is_first_kilobyte(run: Any, db: Path, tmp_path: Path) -> None:
    f = write_lines(tmp_path / "t.jsonl", ["{" + "x" * 5000])
    ingest_json(run, f, "--db", db)
    assert query(db, "select length(raw) from rejects") == [(1024,)]


def test_long_line_and_no_final_newline(run: Any, db: Path, tmp_path: Path) -> None:
    prompt = "déjà vu " * 40_000  # 320 KB of text
    f = write_lines(tmp_path / "t.jsonl", [request("a"), request("big", prompt=prompt)], final_newline=False)
    out = ingest_json(run, f, "--db", db)
    assert (out["requests"], out["rejected"]) == (2, 0)
    assert query(db, "select prompt = ?, prompt_chars from requests where request_id = 'big'", [prompt]) == [
        (True, len(prompt))
    ]


@pytest.mark.parametrize("compress", [gzip.compress, lambda b: zstandard.ZstdCompressor().compress(b)])
def test_compressed_inputs_detected_by_magic_bytes(run: Any, db: Path, tmp_path: Path, compress: Any) -> None:
    plain = (EXAMPLES / "flat-steps.jsonl").read_bytes()
    f = tmp_path / "trace.txt"  # the name says nothing
    f.write_bytes(compress(plain))
    result = run("ingest", f, "--db", db, "--json")
    assert result.exit_code == 0
    expected = ingest_json(run, EXAMPLES / "flat-steps.jsonl", "--db", db.with_name("plain.duckdb"))
    got = json.loads(result.stdout)
    assert {k: got[k] for k in KEYS} == {k: expected[k] for k in KEYS}
    assert "gzip" in result.stderr or "zstd" in result.stderr


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_stream_keeps_the_lines_before_the_break(
    run: Any, db: Path, tmp_path: Path, codec: str, keep: float
) -> None:
    """A compressed file cut short keeps every whole line that can be decompressed before the break; one
    truncated_input reject stands for the rest, at the line the break cut."""
    data = "".join(
        json.dumps(request(f"r{i:04d}", prompt=f"p{i * 7919}")) + "\n" for i in range(2000)
    ).encode()
    if codec == "gzip":
        packed, unpack = gzip.compress(data), zlib.decompressobj(wbits=31).decompress
    else:
        packed, unpack = (
            zstandard.ZstdCompressor().compress(data),
            zstandard.ZstdDecompressor().decompressobj().decompress,
        )
    cut = packed[: int(len(packed) * keep)]
    f = tmp_path / "cut.jsonl.gz"
    f.write_bytes(cut)
    out = ingest_json(run, f, "--db", db)
    assert out["rejected"] == 1
    kept = out["requests"]
    assert kept == unpack(cut).count(b"\n")  # every whole line the cut stream still holds
    assert 0 < kept < 2000
    ids = [r for (r,) in query(db, "select request_id from requests order by request_id")]
    assert ids == [f"r{i:04d}" for i in range(kept)]  # a prefix of the file, nothing skipped
    assert query(db, "select reason, line from rejects") == [("truncated_input", kept + 1)]


def test_stdin(run: Any, db: Path) -> None:
    data = (EXAMPLES / "nested-steps.jsonl").read_bytes()
    out = ingest_json(run, "-", "--db", db, input=data)
    assert out["requests"] == 12
    assert query(db, "select path from ingest_ledger") == [("<stdin>",)]


def test_folder_recursive(run: Any, db: Path, tmp_path: Path) -> None:
    (tmp_path / "in" / "sub").mkdir(parents=True)
    shutil.copy(EXAMPLES / "nested-steps.jsonl", tmp_path / "in" / "sub" / "b.jsonl")
    shutil.copy(EXAMPLES / "flat-steps.jsonl", tmp_path / "in" / "a.jsonl")
    (tmp_path / "in" / ".hidden").write_text("not a trace")
    out = ingest_json(run, tmp_path / "in", "--db", db)
    assert out["files"] == 2
    assert [p for (p,) in query(db, "select path from ingest_ledger order by ingested_at")] == [
        str(tmp_path / "in" / "a.jsonl"),
        str(tmp_path / "in" / "sub" / "b.jsonl"),
    ]


def test_extra_fields_that_look_like_dates_stay_text(run: Any, db: Path, tmp_path: Path) -> None:
    # the fast reader infers timestamps from such strings; fields outside the format must come back as written
    dates = {
        "day": "2025-03-01",
        "when": "2025-03-01 12:00:00",
        "meta": {"d": "2025-03-02", "l": ["2025-03-03"]},
    }
    step = {"step": 0, "drafted": 2, "accepted": 1, "seen": "2025-03-04"}
    f = write_lines(tmp_path / "t.jsonl", [request(f"r{i}", steps=[step], **dates) for i in range(3)])
    ingest_json(run, f, "--db", db)
    assert [json.loads(e) for (e,) in query(db, "select extra from requests")] == [dates] * 3
    assert [json.loads(e) for (e,) in query(db, "select extra from steps")] == [{"seen": "2025-03-04"}] * 3


def test_extra_fields_kept(run: Any, db: Path, tmp_path: Path) -> None:
    f = write_lines(
        tmp_path / "t.jsonl",
        [
            request(
                "a",
                region="eu",
                meta={"k": [1, 2]},
                steps=[{"step": 0, "drafted": 1, "accepted": 1, "spec_kind": "tree"}],
            )
        ],
    )
    ingest_json(run, f, "--db", db)
    extra = json.loads(query(db, "select extra from requests")[0][0])
    assert extra == {"region": "eu", "meta": {"k": [1, 2]}}
    assert json.loads(query(db, "select extra from steps")[0][0]) == {"spec_kind": "tree"}


def test_redact(run: Any, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECDIAG_REDACT_KEY", "k3y")
    f = write_lines(tmp_path / "t.jsonl", [request("a", prompt="my card is 4111", output="noted")])
    ingest_json(run, f, "--db", db, "--redact")
    want = hmac.new(b"k3y", b"my card is 4111", hashlib.sha256).hexdigest()
    assert query(db, "select prompt, output, prompt_hash, prompt_chars, output_chars from requests") == [
        (None, None, want, 15, 5)
    ]
    assert b"4111" not in db.read_bytes()


def test_redact_without_env_key_persists_a_random_key(
    run: Any, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SPECDIAG_REDACT_KEY", raising=False)
    ingest_json(run, write_lines(tmp_path / "1.jsonl", [request("a", prompt="same")]), "--db", db, "--redact")
    ingest_json(run, write_lines(tmp_path / "2.jsonl", [request("b", prompt="same")]), "--db", db, "--redact")
    hashes = query(db, "select distinct prompt_hash from requests")
    assert len(hashes) == 1 and hashes[0][0] != hashlib.sha256(b"same").hexdigest()


def test_max_rejects(run: Any, db: Path, tmp_path: Path) -> None:
    f = write_lines(tmp_path / "t.jsonl", [request("a"), "{bad", "[1]"])
    assert run("ingest", f, "--db", db, "--max-rejects", "2").exit_code == 0
    result = run("ingest", f, "--db", db.with_name("other.duckdb"), "--max-rejects", "1")
    assert result.exit_code == 1
    assert "2 lines rejected" in result.stderr and "Traceback" not in result.stderr
    assert query(db.with_name("other.duckdb"), "select count(*) from requests") == [
        (1,)
    ]  # accepted lines kept


def test_missing_path_and_unusable_database(run: Any, db: Path, tmp_path: Path) -> None:
    result = run("ingest", tmp_path / "nope.jsonl", "--db", db)
    assert result.exit_code == 3 and "nope.jsonl: no such file" in result.stderr
    bad_db = tmp_path / "not-a-db.duckdb"
    bad_db.write_text("hello, this is not a database\n" * 100)
    result = run("ingest", EXAMPLES / "flat-steps.jsonl", "--db", bad_db)
    assert result.exit_code == 4 and result.stderr.startswith("error:") and "Traceback" not in result.stderr
    result = run("ingest", EXAMPLES / "flat-steps.jsonl", "--db", tmp_path / "no" / "such" / "dir.duckdb")
    assert result.exit_code == 4


def test_unknown_format_and_forced_trace(run: Any, db: Path, tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("hello\nworld\n")
    result = run("ingest", f, "--db", db)
    assert result.exit_code == 3 and f"{f}: unknown format" in result.stderr
    out = ingest_json(run, f, "--db", db, "--format", "trace")
    assert out["rejected"] == 2
    assert run("ingest", f, "--db", db, "--format", "nonsense").exit_code == 2


def test_python_api(db: Path) -> None:
    stats = ingest_paths([EXAMPLES / "nested-steps.jsonl"], db=db, progress=False)
    assert (stats.files, stats.requests, stats.rejected) == (1, 12, 0)
    assert (
        stats.lines
        == stats.stored_lines + stats.duplicates + stats.blank + stats.rejected + stats.other_lines
    )


def test_insert_frame_maps_columns_and_lets_each_block_go(monkeypatch: pytest.MonkeyPatch) -> None:
    # a file is one transaction; DuckDB would keep every register()-ed block alive until commit (memory grows
    # with the file), so blocks go in through a relation and nothing holds them once inserted
    import gc
    import weakref

    import polars as pl
    import pyarrow as pa

    from specdiag.store import insert_frame

    con = duckdb.connect()
    con.execute("create temp table t (a integer, b varchar, c double)")
    seen: list[weakref.ref[pa.Table]] = []
    to_arrow = pl.DataFrame.to_arrow

    def tracked(self: pl.DataFrame, *args: Any, **kwargs: Any) -> pa.Table:
        table = to_arrow(self, *args, **kwargs)
        seen.append(weakref.ref(table))
        return table

    monkeypatch.setattr(pl.DataFrame, "to_arrow", tracked)
    con.execute("begin transaction")
    insert_frame(con, "t", pl.DataFrame({"x": [1, 2], "b": ["p", "q"]}), {"a": "x * 10", "b": "b"})
    gc.collect()
    assert seen and all(ref() is None for ref in seen)
    con.execute("commit")
    assert con.execute("select * from t order by a").fetchall() == [(10, "p", None), (20, "q", None)]
    with pytest.raises(ValueError, match="no column"):
        insert_frame(con, "t", pl.DataFrame({"x": [1]}), {"nope": "x"})
    with pytest.raises(ValueError, match="no table"):  # a name not in the catalog never reaches the SQL text
        insert_frame(con, "t; drop table t", pl.DataFrame({"x": [1]}), {})


def test_memory_limit_from_the_environment(
    run: Any, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from specdiag.store import connect

    f = write_lines(tmp_path / "t.jsonl", [request("a")])
    monkeypatch.setenv("SPECDIAG_MEMORY_LIMIT", "300MB")
    ingest_json(run, f, "--db", db)
    con = connect(db, read_only=True)
    limit = con.execute("select current_setting('memory_limit')").fetchall()[0][0]
    con.close()
    assert limit.replace(" ", "") in ("286.1MiB", "300.0MB")  # DuckDB prints it in binary units
    monkeypatch.setenv("SPECDIAG_MEMORY_LIMIT", "lots")
    bad = run("summary", "--db", db)
    assert bad.exit_code == 4 and "SPECDIAG_MEMORY_LIMIT='lots' is not a memory size" in bad.stderr


def test_a_store_created_before_a_column_was_added_gains_it(tmp_path: Path) -> None:
    from specdiag.store import SCHEMA, connect

    old = tmp_path / "old.duckdb"
    con = duckdb.connect(str(old))
    # replay_runs as it first shipped, without batch_size
    con.execute(re.sub(r"first_divergence json,\n\s+batch_size[^\n]*", "first_divergence json", SCHEMA))
    con.execute("insert into schema_info values (1)")
    con.close()
    connect(old).close()  # a writable open brings the schema up to date
    with duckdb.connect(str(old), read_only=True) as con:
        columns = [r[0] for r in con.execute("describe replay_runs").fetchall()]
    assert columns[-1] == "batch_size"


@pytest.mark.parametrize("how", ["grouped", "block", "gzip", "stdin"])
def test_a_byte_order_mark_at_the_start_is_skipped(
    run: Any, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Windows tools write a UTF-8 byte order mark: line 1 is read after it, and byte offsets still count it."""
    if how == "block":
        monkeypatch.setattr("specdiag.ingest.SMALL_FILE_BYTES", -1)
    good = json.dumps(request("r1")).encode() + b"\n"
    data = b"\xef\xbb\xbf" + good + json.dumps(request("r2", tau="4")).encode() + b"\n"
    f = tmp_path / "bom.jsonl"
    f.write_bytes(gzip.compress(data) if how == "gzip" else data)
    out = ingest_json(run, "-" if how == "stdin" else f, "--db", db, input=data if how == "stdin" else None)
    assert (out["requests"], out["rejected"], out["lines"]) == (1, 1, 2)
    assert query(db, "select line, byte_offset, reason from rejects") == [(2, 3 + len(good), "wrong_type")]
    sglang = tmp_path / "sglang.log"  # an engine log too: the format is recognised after the mark
    sglang.write_bytes(
        b"\xef\xbb\xbf[2026-07-20 10:11:12 TP0] Decode batch, #running-req: 24, #token: 18342, token usage: 0.09, "
        b"accept len: 2.87, accept rate: 0.62, cuda graph: True, gen throughput (token/s): 1843.52, #queue-req: 0\n"
    )
    assert ingest_json(run, sglang, "--db", db)["windows"] == 1


def test_an_empty_folder_is_said_to_be_empty(run: Any, db: Path, tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    (folder / ".old").mkdir(parents=True)
    (folder / ".old" / "t.jsonl").write_bytes((EXAMPLES / "flat-steps.jsonl").read_bytes())
    result = run("ingest", folder, "--db", db)
    assert result.exit_code == 0
    assert f"{folder}: no files in this folder (hidden files are skipped)" in result.stderr


def test_redact_keeps_no_text_in_rejects(run: Any, db: Path, tmp_path: Path) -> None:
    """--redact stored the prompt of a rejected line verbatim in rejects.raw."""
    f = write_lines(
        tmp_path / "t.jsonl",
        [request("a", tau="4", prompt="my card is 4111", output="noted 4111"), '{"prompt": "4111 cut short'],
    )
    ingest_json(run, f, "--db", db, "--redact")
    raws = query(db, "select raw from rejects order by line")
    assert [json.loads(raws[0][0])[k] for k in ("prompt", "output", "tau")] == [
        "[redacted]",
        "[redacted]",
        "4",
    ]
    assert raws[1] == ("",)
    assert b"4111" not in db.read_bytes()
