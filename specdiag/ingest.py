"""``ingest``: trace files and engine logs into the store, losing nothing.

Each input (file or stdin) is committed in one transaction together with its ledger row, keyed by the SHA-256 of
its decompressed content: a crash leaves no partial file behind, and the same content is never ingested twice.
Small uncompressed trace files share a transaction (and a parsed block), each with its own ledger row.
Every line lands in exactly one place, so that for each file
``lines = stored_lines + duplicates + blank + rejected + other_lines``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from specdiag import formats
from specdiag.errors import InputError, ThresholdExceeded, UsageError
from specdiag.ingest_read import (
    BLOCK_BYTES,
    BOM,
    GZIP_MAGIC,
    STDIN,
    ZSTD_MAGIC,
    Block,
    Source,
    TruncatedInput,
    expand_paths,
    line_bounds,
    open_decompressed,
    read_blocks,
)
from specdiag.ingest_store import (
    FileSpans,
    StepAppender,
    already_ingested,
    begin_file,
    ingested,
    prepare_requests,
    redact_key,
    stored_ids,
    update_totals,
    write_ledger,
    write_rejects,
    write_trace_rows,
)
from specdiag.ingest_trace import (
    REQUEST_SCHEMA,
    STEP_SCHEMA,
    BlockRows,
    Rejected,
    parse_block,
    read_whole,
)
from specdiag.store import MEMORY_ENV, connect, insert_frame, table_columns, transaction

TRACE = "trace"
HEAD_LINES = 200  # lines shown to format detectors
# Uncompressed trace files up to this size are read whole, many to a block and a transaction (each with its own
# ledger row): a file of a few lines otherwise costs as much as a block, and files up to a block's size were
# measured faster this way too (`benchmarks/ingest.py --file-sizes`, docs/benchmarks.md).
SMALL_FILE_BYTES = BLOCK_BYTES
DUCKDB_MEMORY = "512MB"


@dataclass
class FileStats:
    path: str
    format: str
    compression: str = "none"
    skipped: bool = False  # same content already in the ledger
    lines: int = 0
    stored_lines: int = 0
    requests: int = 0
    steps: int = 0
    windows: int = 0
    rejected: int = 0
    duplicates: int = 0
    blank: int = 0
    other_lines: int = 0
    notes: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)  # the first few rejects: "path:line: reason (detail)"

    def keep_examples(self, rejects: Sequence[Any], limit: int = 3) -> None:
        for r in rejects[: max(0, limit - len(self.examples))]:
            self.examples.append(f"{self.path}:{r.line}: {r.reason} ({r.detail})")


# the line and row counts a file adds to the run's totals
COUNTS = (
    "lines",
    "stored_lines",
    "requests",
    "steps",
    "windows",
    "rejected",
    "duplicates",
    "blank",
    "other_lines",
)


@dataclass
class IngestStats:
    """Counts for one run (files skipped as already ingested add nothing but ``skipped``)."""

    files: int = 0
    skipped: int = 0
    lines: int = 0
    stored_lines: int = 0
    requests: int = 0
    steps: int = 0
    windows: int = 0
    rejected: int = 0
    duplicates: int = 0
    blank: int = 0
    other_lines: int = 0
    per_file: list[FileStats] = field(default_factory=list)
    empty_folders: list[str] = field(default_factory=list)  # folders given that held no file to read

    def add(self, f: FileStats) -> None:
        self.per_file.append(f)
        self.files += 1
        if f.skipped:
            self.skipped += 1
            return
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + getattr(f, name))

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["per_file"] = [asdict(f) for f in self.per_file]
        return out


Progress = Callable[[int], None]  # called with the number of on-disk bytes read so far for the current file


def _looks_like_trace(head: list[bytes]) -> bool:
    """A trace file: its first non-blank lines are JSON objects with trace keys (or it has no content)."""
    import json

    nonblank = [h for h in head if h.strip()]
    if not nonblank:
        return True
    for raw in nonblank[:20]:
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested too deep for Python's parser
            continue
        if isinstance(obj, dict) and (
            obj.get("event") in ("request", "step")
            or ("request_id" in obj and ("tau" in obj or "steps" in obj))
        ):
            return True
    return False


def choose_format(fmt: str, head_lines: list[bytes], label: str) -> str:
    if fmt != "auto":
        return fmt
    if _looks_like_trace(head_lines):
        return TRACE
    name = formats.detect([h.decode("utf-8", "replace") for h in head_lines])
    if name is None and next(h for h in head_lines if h.strip()).lstrip().startswith(b"{"):
        return TRACE  # JSON objects that no engine format claims: a trace file whose head is damaged
    if name is None:
        raise InputError(f"{label}: unknown format", hint="pass --format trace or an engine format name")
    return name


def known_formats() -> list[str]:
    import importlib

    names = [TRACE]
    for module_name in formats.FORMATS:
        names.append(str(importlib.import_module(f"specdiag.formats.{module_name}").NAME))
    return names


def _head(block: Block | None) -> list[bytes]:
    if block is None:
        return []
    return [block.line(i) for i in range(min(block.n_lines, HEAD_LINES))]


def _parsed(blocks: Iterator[Block]) -> Iterator[BlockRows]:
    """Blocks read and parsed by pyarrow one ahead in a worker thread, overlapping the checks and writes here.

    pyarrow, polars and DuckDB release the GIL in their work; at most two blocks are in flight. Reading (and the
    progress callback) runs in the worker too; DuckDB is only used from the caller's thread.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="specdiag-read") as pool:

        def read_next() -> tuple[Block, pa.Table | None] | None:
            block = next(blocks, None)
            return None if block is None else (block, read_whole(block))

        pending = pool.submit(read_next)
        while (got := pending.result()) is not None:
            pending = pool.submit(read_next)
            yield parse_block(*got)


def _ingest_trace(
    con: duckdb.DuckDBPyConnection, blocks: Iterator[Block], stats: FileStats, file_id: str, key: bytes | None
) -> None:
    appender = StepAppender()
    touched = 0
    spans = FileSpans([1], [file_id])
    for rows in _parsed(blocks):
        requests = prepare_requests(rows.requests, key)
        (written,), block_touched = write_trace_rows(con, requests, rows.steps, spans, TRACE, appender)
        touched += block_touched
        stats.lines += rows.lines
        stats.blank += rows.blank
        stats.requests += written.requests
        stats.steps += written.steps
        stats.stored_lines += written.stored_lines
        stats.duplicates += written.duplicates
        write_rejects(con, file_id, stats.path, rows.rejects, key is not None)
        stats.keep_examples(rows.rejects)
        stats.rejected += len(rows.rejects)
    appender.flush(con)
    if touched:  # else every stored request got its totals from its own nested steps
        update_totals(con)


# the tables whose rows carry the file's id: rows written under a placeholder id move to the content's own
_RENAME_FILE_ID = (
    "update requests set file_id = $id where file_id = $old",
    "update rejects set file_id = $id where file_id = $old",
    "update windows set file_id = $id where file_id = $old",
    "update counter_samples set file_id = $id where file_id = $old",
)


def _lines(blocks: Iterable[Block], counter: list[int]) -> Iterator[formats.Line]:
    for block in blocks:
        for i in range(block.n_lines):
            counter[0] += 1
            yield formats.Line(block.first_line + i, block.byte_offset + int(block.starts[i]), block.line(i))


def _ingest_engine(
    con: duckdb.DuckDBPyConnection,
    name: str,
    blocks: Iterator[Block],
    stats: FileStats,
    file_id: str,
    ctx: formats.ParseContext,
    key: bytes | None,
) -> None:
    counter = [0]
    parsed = formats.parse(name, _lines(blocks, counter), ctx)
    stats.lines = counter[0]
    stats.blank, stats.other_lines, stats.notes = parsed.blank, parsed.other_lines, list(parsed.notes)
    write_rejects(con, file_id, stats.path, parsed.rejects, key is not None)
    stats.keep_examples(parsed.rejects)
    stats.rejected = len(parsed.rejects)
    stored, dups = _write_engine_requests(con, parsed.requests, file_id, parsed.format, key)
    stats.requests, stats.duplicates = stored, dups
    stats.windows = _insert_dicts(con, "windows", parsed.windows, file_id)
    if parsed.samples:
        from specdiag.formats.samples import write_samples

        stats.windows += write_samples(con, parsed.samples, file_id)
    # the parser's accounting: lines = used_lines + blank + rejects + other_lines (duplicates are among used_lines)
    stats.stored_lines = parsed.used_lines - stats.duplicates
    accounted = parsed.used_lines + parsed.blank + len(parsed.rejects) + parsed.other_lines
    if accounted != stats.lines:
        raise InputError(f"{stats.path}: the {name} parser accounted for {accounted} of {stats.lines} lines")


def _insert_dicts(
    con: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, Any]], file_id: str
) -> int:
    """Insert rows given as dicts of column values (columns not in the table are an error of the parser)."""
    if not rows:
        return 0
    allowed = table_columns(con, table)
    names = [c for c in allowed if c != "file_id" and any(c in r for r in rows)]
    unknown = sorted({k for r in rows for k in r} - set(allowed))
    if unknown:
        raise InputError(f"parser produced unknown {table} columns: {', '.join(unknown)}")
    # built column by column: a list per column converts faster than a list of dicts (same inferred types)
    frame = pl.DataFrame({n: [r.get(n) for r in rows] for n in names}, strict=False)
    insert_frame(
        con, table, frame.with_columns(pl.lit(file_id).alias("file_id")), {n: n for n in [*names, "file_id"]}
    )
    return len(rows)


def _write_engine_requests(
    con: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]], file_id: str, fmt: str, key: bytes | None
) -> tuple[int, int]:
    """Per-request engine records: first write wins by request_id. Returns (stored, duplicates)."""
    if not rows:
        return 0, 0
    ids = pl.DataFrame({"request_id": [str(r.get("request_id")) for r in rows]})
    stored = set(stored_ids(con, "requests", ids.unique())["request_id"].to_list())
    fresh: list[dict[str, Any]] = []
    for row in rows:
        rid = str(row.get("request_id"))
        if rid in stored:
            continue
        stored.add(rid)
        fresh.append({"source": fmt, **row})
    for row in fresh:
        for col in ("prompt", "output"):
            text = row.get(col)
            if isinstance(text, str):
                row[f"{col}_chars"] = len(text)
                if key is not None:
                    row[f"{col}_hash"] = hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()
                    row[col] = None
    return _insert_dicts(con, "requests", fresh, file_id), len(rows) - len(fresh)


def ingest_source(
    con: duckdb.DuckDBPyConnection,
    source: Source,
    fmt: str = "auto",
    deployment: str | None = None,
    year: int | None = None,
    redact: bool = False,
    on_progress: Progress | None = None,
    on_format: Callable[[str, str], None] | None = None,
    tz: str | None = None,
) -> FileStats:
    """One input, one transaction: rows, rejects and the ledger row commit together (or not at all)."""
    stream, counting = open_decompressed(source)
    stats = FileStats(path=source.label, format="?")
    truncated: list[Rejected] = []

    def blocks() -> Iterator[Block]:
        line, offset = 1, 0
        try:
            for block in read_blocks(stream, source):
                line, offset = block.first_line + block.n_lines, block.byte_offset + len(block.data)
                yield block
                if on_progress is not None:
                    on_progress(counting.count)
        except TruncatedInput as exc:
            truncated.append(Rejected(line, offset, "truncated_input", str(exc), b""))

    it = blocks()
    first = next(it, None)
    try:
        name = choose_format(fmt, _head(first), source.label)
        stats.format = name
        stats.compression = source.compression
        if on_format is not None:
            on_format(
                source.label, name if source.compression == "none" else f"{name} ({source.compression})"
            )
        chained = itertools.chain([first] if first is not None else [], it)
        # A plain file is hashed up front (one cheap read): content already in the ledger is skipped without
        # parsing, and rows are written under their final id. Otherwise (stdin, compressed input) rows are written
        # under a placeholder id until the fingerprint is known at the end of the stream.
        hashed = prehash(source)
        if hashed is not None and (previous := already_ingested(con, hashed)) is not None:
            raise _Skip(previous)
        with transaction(con):
            begin_file(con)
            key = redact_key(con) if redact else None
            file_id = hashed or f"pending-{secrets.token_hex(8)}"
            if name == TRACE:
                _ingest_trace(con, chained, stats, file_id, key)
            else:
                ctx = formats.ParseContext(
                    path=source.label, deployment=deployment, year=year, mtime=_mtime(source), tz=tz
                )
                _ingest_engine(con, name, chained, stats, file_id, ctx, key)
            for t in truncated:  # the stream broke: one reject marks where
                write_rejects(con, file_id, stats.path, [t])
                stats.keep_examples([t])
                stats.rejected += 1
                stats.lines += 1
            written_as, file_id = file_id, source.fingerprint.hexdigest()
            if (
                file_id != written_as
            ):  # a placeholder, or the file changed after it was hashed (a growing log)
                if (previous := already_ingested(con, file_id)) is not None:
                    raise _Skip(previous)
                for statement in _RENAME_FILE_ID:
                    con.execute(statement, {"id": file_id, "old": written_as})
            write_ledger(con, [_ledger_row(file_id, stats)])
    except _Skip as skip:
        stats.skipped = True
        stats.notes.append(_same_content(*skip.args[0]))
    finally:
        if source.path != STDIN:
            stream.close()
    if stats.skipped:
        return FileStats(
            path=stats.path,
            format=stats.format,
            compression=stats.compression,
            skipped=True,
            notes=stats.notes,
        )
    return stats


def _same_content(path: str, when: datetime) -> str:
    """The note of a file skipped because its content was ingested before (as ``path``, at ``when``, UTC)."""
    return f"same content as {path}, ingested {when:%Y-%m-%d %H:%M:%S} UTC"


class _Skip(Exception):
    """A file whose content is already in the ledger (args: the ledger's path and time); rolls back any rows."""


def prehash(source: Source) -> str | None:
    """SHA-256 of an uncompressed regular file, read once up front; None for stdin and compressed input (whose
    fingerprint is that of the decompressed content, known only as the stream is read)."""
    if source.path == STDIN or source.compression != "none":
        return None
    with open(source.path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _ledger_row(file_id: str, s: FileStats) -> dict[str, Any]:
    return {
        "file_id": file_id,
        "path": s.path,
        "format": s.format,
        "ingested_at": datetime.now(UTC).replace(tzinfo=None),
        "lines": s.lines,
        "stored_lines": s.stored_lines,
        "requests": s.requests,
        "steps": s.steps,
        "windows": s.windows,
        "duplicates": s.duplicates,
        "blank": s.blank,
        "rejected": s.rejected,
        "other_lines": s.other_lines,
    }


def check_time_zone(tz: str | None) -> None:
    """A usage error, before any file is read, for a zone name the tz database does not know."""
    if tz is None:
        return
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UsageError(
            f"unknown time zone {tz!r}", hint="an IANA name such as Europe/Berlin or UTC"
        ) from exc


def _mtime(source: Source) -> datetime | None:
    if source.path == STDIN:
        return None
    return datetime.fromtimestamp(os.stat(source.path).st_mtime, UTC).replace(tzinfo=None)


def ingest_paths(
    paths: Iterable[str | os.PathLike[str]],
    db: str | os.PathLike[str] | None = None,
    fmt: str = "auto",
    deployment: str | None = None,
    year: int | None = None,
    redact: bool = False,
    max_rejects: int | None = None,
    progress: bool = True,
    tz: str | None = None,
) -> IngestStats:
    """Ingest files, folders (recursively, sorted) and "-" (stdin) into the store at ``db``.

    ``tz``: the IANA time zone engine logs printed their local times in (None: UTC); trace files carry their own.
    """
    empty: list[str] = []
    files = expand_paths([str(p) for p in paths], empty)
    if fmt != "auto" and fmt not in known_formats():
        raise UsageError(f"unknown format {fmt!r}", hint=f"one of auto, {', '.join(known_formats())}")
    check_time_zone(tz)
    con = connect_for_ingest(db)
    try:
        stats = ingest_files(con, files, fmt, deployment, year, redact, max_rejects, progress, tz)
    finally:
        con.close()
    stats.empty_folders = empty
    return stats


def _small_trace(source: Source, fmt: str) -> bytes | None:
    """The content of an uncompressed trace file of at most SMALL_FILE_BYTES, else None (ingested on its own)."""
    if (
        source.path == STDIN
        or source.size is None
        or source.size > SMALL_FILE_BYTES
        or fmt not in ("auto", TRACE)
    ):
        return None
    try:
        data = Path(source.path).read_bytes()
    except OSError as exc:
        raise InputError(f"{source.path}: cannot open: {exc.strerror}") from exc
    if data.startswith((GZIP_MAGIC, ZSTD_MAGIC)) or len(data) > SMALL_FILE_BYTES:
        return None
    if fmt == "auto":
        head = data.removeprefix(BOM).split(b"\n", HEAD_LINES)[:HEAD_LINES] if data else []
        try:
            if choose_format(fmt, head, source.label) != TRACE:
                return None
        except InputError:  # no format claims it: ingest_source says so, after the files before it are stored
            return None
    return data


def ingest_small_files(
    con: duckdb.DuckDBPyConnection, files: list[tuple[Source, bytes]], redact: bool = False
) -> list[FileStats]:
    """Small uncompressed trace files (path and content, in order), in one block and one transaction.

    Each file gets its ledger row, and its rows, rejects and counts are its own, exactly as when it is ingested on
    its own (``tests/test_ingest.py`` compares the two); what they share is the cost of a block (parse, checks,
    appends) and of a transaction, which for a file of a few lines is most of the cost of ingesting it.
    """
    out: list[FileStats] = []
    live: list[tuple[int, str, bytes]] = []  # (position in out, file_id, content) of the files to ingest
    seen: dict[str, str] = {}
    file_ids = [hashlib.sha256(data).hexdigest() for _, data in files]
    known = ingested(con, file_ids)
    for (source, data), file_id in zip(files, file_ids):
        previous = known.get(file_id)
        if previous is None and file_id in seen:  # the same content earlier in this group
            previous = (seen[file_id], datetime.now(UTC))
        if previous is not None:
            out.append(
                FileStats(path=source.label, format=TRACE, skipped=True, notes=[_same_content(*previous)])
            )
            continue
        seen[file_id] = source.label
        live.append((len(out), file_id, data))
        out.append(FileStats(path=source.label, format=TRACE))
    if not live:
        return out
    # one block: each file's lines in turn (a last line without its newline gets one, which adds no line; a byte
    # order mark at the start is skipped, as read_blocks skips it, and its 3 bytes still count in byte offsets)
    boms = [len(BOM) if d.startswith(BOM) else 0 for _, _, d in live]
    pieces = [d[b:] for (_, _, d), b in zip(live, boms)]
    pieces = [p if not p or p.endswith(b"\n") else p + b"\n" for p in pieces]
    first_lines = (1 + np.cumsum([0] + [p.count(b"\n") for p in pieces[:-1]])).tolist()
    first_bytes = (np.cumsum([0] + [len(p) for p in pieces[:-1]]) - np.asarray(boms)).tolist()
    data = b"".join(pieces)
    starts, ends = line_bounds(data)
    block = Block(data, 1, 0, starts, ends)
    spans = FileSpans(first_lines, [file_id for _, file_id, _ in live])
    with transaction(con):
        begin_file(con)
        key = redact_key(con) if redact else None
        rows = (
            parse_block(block, read_whole(block))
            if block.n_lines
            else BlockRows(pl.DataFrame(schema=REQUEST_SCHEMA), pl.DataFrame(schema=STEP_SCHEMA))
        )
        appender = StepAppender()
        written, touched = write_trace_rows(
            con, prepare_requests(rows.requests, key), rows.steps, spans, TRACE, appender
        )
        appender.flush(con)
        if touched:
            update_totals(con)
        blank = np.bincount(spans.of(rows.blank_lines), minlength=len(live))
        rejects_of = spans.of(np.asarray([r.line for r in rows.rejects], dtype=np.int64))
        for k, (position, file_id, _) in enumerate(live):
            stats, w = out[position], written[k]
            stats.lines = pieces[k].count(b"\n")
            stats.blank = int(blank[k])
            stats.requests, stats.steps = w.requests, w.steps
            stats.stored_lines, stats.duplicates = w.stored_lines, w.duplicates
            own = [
                Rejected(
                    r.line - first_lines[k] + 1, r.byte_offset - first_bytes[k], r.reason, r.detail, r.raw
                )
                for r, j in zip(rows.rejects, rejects_of)
                if j == k
            ]
            write_rejects(con, file_id, stats.path, own, key is not None)
            stats.keep_examples(own)
            stats.rejected = len(own)
        write_ledger(con, [_ledger_row(file_id, out[position]) for position, file_id, _ in live])
    return out


def connect_for_ingest(db: str | os.PathLike[str] | None) -> duckdb.DuckDBPyConnection:
    """The store, opened for writing with the settings ingest runs under."""
    con = connect(db)
    # bounded memory whatever the input size: DuckDB spills what a file's transaction appends beyond this
    if not os.environ.get(MEMORY_ENV):
        con.execute("set memory_limit = $limit", {"limit": DUCKDB_MEMORY})
    # rows carry their line number; large appends may then run on several threads
    con.execute("set preserve_insertion_order = false")
    return con


def ingest_files(
    con: duckdb.DuckDBPyConnection,
    files: list[str],
    fmt: str = "auto",
    deployment: str | None = None,
    year: int | None = None,
    redact: bool = False,
    max_rejects: int | None = None,
    progress: bool = True,
    tz: str | None = None,
) -> IngestStats:
    """Like ``ingest_paths`` on an open connection (expanded file list, no folders)."""
    from specdiag.ingest_progress import ProgressDisplay

    stats = IngestStats()
    with ProgressDisplay(files, enabled=progress) as display:
        small: list[tuple[Source, bytes]] = []  # small trace files waiting to be ingested together, in order
        small_bytes = 0

        def ingest_small() -> None:
            nonlocal small_bytes
            for (source, _), f in zip(small, ingest_small_files(con, small, redact)):
                display.start(source)
                display.chose_format(source.label, TRACE)
                display.advance(source.size or 0)
                display.finish(f)
                stats.add(f)
            small.clear()
            small_bytes = 0

        for path in files:
            size = None if path == STDIN else Path(path).stat().st_size
            source = Source(path, size)
            data = _small_trace(source, fmt)
            if data is not None:
                small.append((source, data))
                small_bytes += len(data)
                if small_bytes >= BLOCK_BYTES:
                    ingest_small()
                continue
            ingest_small()
            display.start(source)
            f = ingest_source(
                con, source, fmt, deployment, year, redact, display.advance, display.chose_format, tz
            )
            display.finish(f)
            stats.add(f)
        ingest_small()
    if max_rejects is not None and stats.rejected > max_rejects:
        raise ThresholdExceeded(
            f"{stats.rejected} lines rejected, more than --max-rejects {max_rejects} (the accepted lines are stored)",
            hint="see them with `specdiag query rejects_by_reason`",
        )
    return stats
