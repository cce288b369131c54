"""Writing parsed rows into the store: first write wins, redaction, request totals, rejects, the ledger.

Duplicates are found with anti-joins against the stored tables (DuckDB hash joins that build on the incoming block
and scan the stored keys), not with indexes: an ART index on tens of millions of steps costs memory and slows every
bulk insert, while the scan of two key columns is cheap (see docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import polars as pl

from specdiag.store import insert_frame

REDACT_ENV = "SPECDIAG_REDACT_KEY"

_REQUEST_COLUMNS = [
    "request_id", "source", "ts", "deployment", "target_model", "draft_model", "tau", "temperature", "top_p",
    "task", "acceptance", "prompt", "output", "prompt_hash", "output_hash", "prompt_chars", "output_chars",
    "prompt_tokens", "output_tokens", "latency_ms", "ttft_ms", "batch_size", "quality", "shadow_match",
    "verify_steps", "drafted", "accepted", "draft_ms", "verify_ms", "extra", "file_id", "line",
]  # fmt: skip
_STEP_COLUMNS = [
    "request_id", "step", "drafted", "accepted", "draft_ms", "verify_ms", "batch_size", "ts",
    "draft_token_ids", "draft_probs", "target_probs", "extra",
]  # fmt: skip


# Each stored column as SQL over the frame's columns (columns not named here are stored as null).
_REQUEST_SQL = {c: c for c in _REQUEST_COLUMNS} | {
    "ts": "make_timestamp(ts_us)",
    "temperature": "coalesce(temperature, 0.0)",
    "top_p": "coalesce(top_p, 1.0)",
}
_STEP_SQL = {c: c for c in _STEP_COLUMNS} | {
    "ts": "case when ts_us is null then null else make_timestamp(ts_us) end"
}


ROW_GROUP_ROWS = 122_880  # DuckDB's rows per row group


class StepAppender:
    """A file's step rows, appended to the store in whole row groups.

    DuckDB appends a large insert on several threads, and each thread's last row group is left part full; the
    checkpoint at close then rewrites those on one thread. Appends of whole row groups, from one contiguous Arrow
    chunk, leave none. The rows past the last whole row group (fewer than one group) wait here for the next block;
    ``flush`` writes them at the end of the file. The dedupe checks see them through ``ids_in`` and ``taken``.
    """

    def __init__(self) -> None:
        self.pending: pl.DataFrame | None = None

    def add(self, con: duckdb.DuckDBPyConnection, steps: pl.DataFrame) -> None:
        rows = steps if self.pending is None else pl.concat([self.pending, steps])
        whole = len(rows) // ROW_GROUP_ROWS * ROW_GROUP_ROWS
        if whole:
            # one chunk: DuckDB splits it between its threads in whole row groups (pieces of a chunked
            # frame were seen to leave part-full groups)
            insert_frame(con, "steps", rows.slice(0, whole).rechunk(), _STEP_SQL)
        self.pending = rows.slice(whole) if len(rows) > whole else None

    def flush(self, con: duckdb.DuckDBPyConnection) -> None:
        if self.pending is not None:
            insert_frame(con, "steps", self.pending, _STEP_SQL)
            self.pending = None

    def ids_in(self, ids: pl.DataFrame) -> pl.DataFrame:
        """The rows of ``ids`` (one column, request_id) with steps waiting here."""
        if self.pending is None:
            return ids.clear()
        return ids.join(self.pending.select("request_id").unique(), on="request_id", how="semi")

    def taken(self, keys: pl.DataFrame) -> pl.DataFrame:
        """The rows of ``keys`` (request_id, step) waiting here."""
        if self.pending is None:
            return keys.clear()
        return keys.join(self.pending.select("request_id", "step"), on=["request_id", "step"], how="semi")


@dataclass
class Written:
    """What one block wrote for one file."""

    requests: int = 0  # request rows stored
    steps: int = 0  # step rows stored
    stored_lines: int = 0  # lines that became rows
    duplicates: int = 0  # lines whose request (or flat step) was already stored


@dataclass
class FileSpans:
    """The files whose lines a block holds, in order: one file, or several small files read as one block.

    ``first_lines[k]`` is the line number (in the numbering of the block's rows) of file k's first line.
    """

    first_lines: list[int]
    file_ids: list[str]

    def of(self, lines: np.ndarray) -> np.ndarray:
        """The index of the file each line number belongs to."""
        return np.searchsorted(np.asarray(self.first_lines), lines, side="right") - 1

    def counts(self, lines: pl.Series) -> np.ndarray:
        """How many of ``lines`` fall in each file."""
        return np.bincount(self.of(lines.to_numpy()), minlength=len(self.file_ids))


def redact_key(con: duckdb.DuckDBPyConnection) -> bytes:
    """$SPECDIAG_REDACT_KEY, else the key persisted in the db (created at random on first use)."""
    env = os.environ.get(REDACT_ENV)
    if env:
        return env.encode("utf-8")
    row = _scalar(con, "select key from redact_key limit 1")
    if row is None:
        key = secrets.token_hex(32)
        con.execute("insert into redact_key values (?)", [key])
        return key.encode("utf-8")
    return str(row).encode("utf-8")


def _hmac(key: bytes) -> Any:
    return lambda text: hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def prepare_requests(requests: pl.DataFrame, key: bytes | None) -> pl.DataFrame:
    """Text lengths in characters; with ``key`` (--redact), a keyed hash replaces prompt and output text."""
    out = requests.with_columns(
        pl.col("prompt").str.len_chars().cast(pl.Int64).alias("prompt_chars"),
        pl.col("output").str.len_chars().cast(pl.Int64).alias("output_chars"),
    )
    if key is None:
        return out.with_columns(
            pl.lit(None, pl.String).alias("prompt_hash"), pl.lit(None, pl.String).alias("output_hash")
        )
    digest = _hmac(key)
    return out.with_columns(
        pl.col("prompt").map_elements(digest, return_dtype=pl.String).alias("prompt_hash"),
        pl.col("output").map_elements(digest, return_dtype=pl.String).alias("output_hash"),
        pl.lit(None, pl.String).alias("prompt"),
        pl.lit(None, pl.String).alias("output"),
    )


def begin_file(con: duckdb.DuckDBPyConnection) -> None:
    """Per-file scratch: the request ids whose totals must be recomputed at the end of the file."""
    con.execute("create or replace temp table _touched (request_id varchar)")


_STORED_IDS = {
    "requests": "select distinct k.request_id from _keys k semi join requests t using (request_id)",
    "steps": "select distinct k.request_id from _keys k semi join steps t using (request_id)",
}


def stored_ids(con: duckdb.DuckDBPyConnection, table: str, keys: pl.DataFrame) -> pl.DataFrame:
    """The rows of ``keys`` (one column, request_id) whose id is already in ``table`` (requests or steps).

    A hash semi-join: DuckDB builds on the block's few thousand ids and scans the stored id column once.
    """
    sql = _STORED_IDS.get(table)
    if sql is None:
        raise ValueError(f"not a keyed table: {table!r}")
    con.register("_keys", keys.to_arrow())
    try:
        found = con.sql(sql).to_arrow_table()
    finally:
        con.unregister("_keys")
    return pl.DataFrame(pl.from_arrow(found)).cast({"request_id": pl.String})


def _totals(steps: pl.DataFrame) -> pl.DataFrame:
    """Request totals over steps: verify_steps counts steps with drafted > 0 (tau = 0 traffic drafts nothing)."""
    return steps.group_by("request_id").agg(
        (pl.col("drafted") > 0).sum().cast(pl.Int64).alias("verify_steps"),
        pl.col("drafted").sum().cast(pl.Int64).alias("drafted"),
        pl.col("accepted").sum().cast(pl.Int64).alias("accepted"),
        pl.when(pl.col("draft_ms").is_not_null().any()).then(pl.col("draft_ms").sum()).alias("draft_ms"),
        pl.when(pl.col("verify_ms").is_not_null().any()).then(pl.col("verify_ms").sum()).alias("verify_ms"),
    )


def write_trace_rows(
    con: duckdb.DuckDBPyConnection,
    requests: pl.DataFrame,
    steps: pl.DataFrame,
    files: FileSpans,
    source: str,
    appender: StepAppender,
) -> tuple[list[Written], int]:
    """Insert one block's rows (sorted by line), skipping what is already stored; count duplicates per line.

    First write wins: a request id already stored, or seen earlier in the block, makes its line a duplicate (its
    nested steps go with it); a flat step whose (request_id, step) is already stored or earlier is a duplicate.
    Steps go through ``appender`` (the transaction's), which the caller flushes before committing. Returns what was
    written for each file of ``files``, and how many request ids ``update_totals`` must recompute.
    """
    first = requests.filter(pl.col("request_id").is_first_distinct())
    known = stored_ids(con, "requests", first.select("request_id"))
    new_requests = first.join(known, on="request_id", how="anti")
    # nested steps of the requests stored now (matched by line: a repeated id on a later line is a duplicate)
    candidates = steps
    if len(new_requests) < len(requests):
        candidates = steps.filter(pl.col("flat") | pl.col("line").is_in(new_requests["line"].implode()))
    flat_ids = candidates.filter("flat")["request_id"].unique()
    # nested steps are unique per request (the validator sees to it): only ids with flat lines can repeat a key
    if len(flat_ids):
        shared = candidates.filter(pl.col("request_id").is_in(flat_ids.implode()))
        if shared.select(pl.struct("request_id", "step").is_duplicated().any()).item():
            candidates = candidates.sort("line").filter(pl.struct("request_id", "step").is_first_distinct())
    # ids with steps already stored (flat lines of an earlier file): keep only their new steps, recompute totals
    ids = pl.concat([new_requests["request_id"], flat_ids]).unique().to_frame("request_id")
    with_steps = pl.concat([stored_ids(con, "steps", ids), appender.ids_in(ids)]).unique()
    if len(with_steps):
        keys = candidates.join(with_steps, on="request_id", how="semi").select("request_id", "step")
        con.register("_cand", keys.to_arrow())
        try:
            taken = con.sql(
                "select c.request_id, c.step from _cand c semi join steps t using (request_id, step)"
            ).to_arrow_table()
        finally:
            con.unregister("_cand")
        taken_df = pl.DataFrame(pl.from_arrow(taken)).cast({"request_id": pl.String, "step": pl.Int64})
        taken_df = pl.concat([taken_df, appender.taken(keys)])
        candidates = candidates.join(taken_df, on=["request_id", "step"], how="anti")
    # totals of new requests from their nested steps; ids that also have other steps are recomputed at file end
    touched = pl.concat([flat_ids, with_steps["request_id"]]).unique().to_frame("request_id")
    if len(touched):
        totals = _totals(candidates.filter(~pl.col("request_id").is_in(touched["request_id"].implode())))
    else:
        totals = _totals(candidates)  # no flat steps: every step is nested in a request stored now
    new_requests = new_requests.update(totals, on="request_id", how="left")
    # each request's file, and its line number within that file
    k = files.of(new_requests["line"].to_numpy())
    requests_out = new_requests.with_columns(
        pl.lit(source).alias("source"),
        pl.Series("file_id", np.asarray(files.file_ids, dtype=object)[k], pl.String),
        pl.col("line") - pl.Series(np.asarray(files.first_lines, dtype=np.int64)[k]) + 1,
    )
    insert_frame(con, "requests", requests_out, _REQUEST_SQL)
    appender.add(con, candidates)
    insert_frame(con, "_touched", touched, {"request_id": "request_id"})
    n_requests, n_new = files.counts(requests["line"]), files.counts(new_requests["line"])
    n_flat = files.counts(steps.filter("flat")["line"])
    n_flat_stored = files.counts(candidates.filter("flat")["line"])
    n_steps = files.counts(candidates["line"])
    written = [
        Written(
            requests=int(n_new[i]),
            steps=int(n_steps[i]),
            stored_lines=int(n_new[i] + n_flat_stored[i]),
            duplicates=int((n_requests[i] - n_new[i]) + (n_flat[i] - n_flat_stored[i])),
        )
        for i in range(len(files.file_ids))
    ]
    return written, len(touched)


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> Any:
    """The first value of a query, or None; fetches every row so that the connection is free again."""
    rows = con.execute(sql, params or []).fetchall()
    return rows[0][0] if rows else None


def update_totals(con: duckdb.DuckDBPyConnection) -> None:
    """Request totals from the stored steps of every request this file touched.

    verify_steps counts steps with drafted > 0 (tau = 0 control traffic has decode steps with drafted = 0).
    Requests without steps keep the totals they were logged with.
    """
    con.execute(
        """
        update requests r set verify_steps = a.verify_steps, drafted = a.drafted, accepted = a.accepted,
                              draft_ms = a.draft_ms, verify_ms = a.verify_ms
        from (
            select s.request_id, count(*) filter (where s.drafted > 0) as verify_steps,
                   sum(s.drafted) as drafted, sum(s.accepted) as accepted,
                   sum(s.draft_ms) as draft_ms, sum(s.verify_ms) as verify_ms
            from steps s
            where s.request_id in (select distinct request_id from _touched)
            group by s.request_id
        ) a
        where r.request_id = a.request_id
        """
    )


REDACTED = "[redacted]"


def redact_raw(raw: str) -> str:
    """A rejected line's raw text as ``--redact`` keeps it: a JSON object with its ``prompt`` and ``output`` masked,
    else nothing (text that does not parse, or was cut at 1 KB, may hold them anywhere)."""
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return ""
    if not isinstance(obj, dict):
        return ""
    for name in ("prompt", "output"):
        if obj.get(name) is not None:
            obj[name] = REDACTED
    return json.dumps(obj)[:1024]  # ASCII: a lone surrogate escaped in the line stays escaped


def write_rejects(
    con: duckdb.DuckDBPyConnection, file_id: str, path: str, rejects: Sequence[Any], redact: bool = False
) -> None:
    """Rejects: objects with line, byte_offset, reason, detail, raw (bytes; first 1 KB kept, decoded leniently).

    ``redact`` (``ingest --redact``): the raw text goes through ``redact_raw``, so no prompt or output text is kept.
    """
    if not rejects:
        return
    keep = redact_raw if redact else (lambda text: text)
    con.executemany(
        "insert into rejects (file_id, path, line, byte_offset, reason, detail, raw) values (?, ?, ?, ?, ?, ?, ?)",
        [
            [
                file_id,
                path,
                r.line,
                r.byte_offset,
                r.reason,
                r.detail,
                keep(r.raw[:1024].decode("utf-8", "replace")),
            ]
            for r in rejects
        ],
    )


def already_ingested(con: duckdb.DuckDBPyConnection, file_id: str) -> tuple[str, Any] | None:
    """(path, ingested_at) of the ledger row with this content fingerprint, or None."""
    return ingested(con, [file_id]).get(file_id)


def ingested(con: duckdb.DuckDBPyConnection, file_ids: list[str]) -> dict[str, tuple[str, Any]]:
    """(path, ingested_at) of each of ``file_ids`` already in the ledger, in one query."""
    rows = con.execute(
        "select file_id, path, ingested_at from ingest_ledger where file_id in (select unnest($ids))",
        {"ids": file_ids},
    ).fetchall()
    return {str(file_id): (str(path), when) for file_id, path, when in rows}


def write_ledger(con: duckdb.DuckDBPyConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Ledger rows (dicts of column values), in one statement: the rows are a bound list of structs."""
    con.execute(
        "insert into ingest_ledger by name select unnest($rows, recursive := true)", {"rows": list(rows)}
    )
