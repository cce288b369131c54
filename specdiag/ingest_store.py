"""Writing parsed rows into the store: first write wins, redaction, request totals, rejects, the ledger.

Duplicates are found with anti-joins against the stored tables (DuckDB hash joins that build on the incoming block
and scan the stored keys), not with indexes: an ART index on tens of millions of steps costs memory and slows every
bulk insert, while the scan of two key columns is cheap (see docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import polars as pl

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


@dataclass
class Written:
    requests: int = 0  # request rows stored
    steps: int = 0  # step rows stored
    stored_lines: int = 0  # lines that became rows
    duplicates: int = 0  # lines whose request (or flat step) was already stored


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


def write_trace_rows(
    con: duckdb.DuckDBPyConnection, requests: pl.DataFrame, steps: pl.DataFrame, file_id: str, source: str
) -> Written:
    """Insert one block's rows (sorted by line), skipping what is already stored; count duplicates per line."""
    w = Written()
    con.register("_in_requests", requests.to_arrow())
    con.register("_in_steps", steps.to_arrow())
    try:
        # requests: first occurrence in the block, and only ids not already stored (first write wins)
        con.execute(
            """
            create or replace temp table _new_requests as
            select * from (
                select * from _in_requests qualify row_number() over (partition by request_id order by line) = 1
            ) n
            where not exists (select 1 from requests r where r.request_id = n.request_id)
            """
        )
        columns = ", ".join(_REQUEST_COLUMNS)
        con.execute(
            f"""
            insert into requests ({columns})
            select request_id, $source, make_timestamp(ts_us), deployment, target_model, draft_model, tau,
                   coalesce(temperature, 0.0), coalesce(top_p, 1.0), task, acceptance, prompt, output,
                   prompt_hash, output_hash, prompt_chars, output_chars, prompt_tokens, output_tokens,
                   latency_ms, ttft_ms, batch_size, quality, shadow_match, verify_steps, drafted, accepted,
                   draft_ms, verify_ms, extra, $file_id, line
            from _new_requests
            """,
            {"source": source, "file_id": file_id},
        )
        w.requests = _count(con, "_new_requests")
        # steps: flat ones, and nested ones of the requests stored just now; first per (request_id, step)
        con.execute(
            """
            create or replace temp table _new_steps as
            select * from (
                select s.* from _in_steps s
                where s.flat
                   or exists (select 1 from _new_requests n where n.request_id = s.request_id and n.line = s.line)
                qualify row_number() over (partition by s.request_id, s.step order by s.line) = 1
            ) s
            where not exists (select 1 from steps t where t.request_id = s.request_id and t.step = s.step)
            """
        )
        con.execute(
            f"""
            insert into steps ({", ".join(_STEP_COLUMNS)})
            select request_id, step, drafted, accepted, draft_ms, verify_ms, batch_size,
                   case when ts_us is null then null else make_timestamp(ts_us) end,
                   draft_token_ids, draft_probs, target_probs, extra
            from _new_steps
            """
        )
        w.steps = _count(con, "_new_steps")
        con.execute("insert into _touched select distinct request_id from _new_steps")
        flat_stored = _scalar(con, "select count(*) from _new_steps where flat")
    finally:
        con.unregister("_in_requests")
        con.unregister("_in_steps")
    flat_lines = int(steps["flat"].sum()) if len(steps) else 0
    w.stored_lines = w.requests + int(flat_stored)
    w.duplicates = (len(requests) - w.requests) + (flat_lines - int(flat_stored))
    return w


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> Any:
    """The first value of a query, or None; fetches every row so that the connection is free again."""
    rows = con.execute(sql, params or []).fetchall()
    return rows[0][0] if rows else None


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(_scalar(con, f"select count(*) from {table}"))  # fixed table names only


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
            where s.request_id in (select request_id from _touched)
            group by s.request_id
        ) a
        where r.request_id = a.request_id
        """
    )


def write_rejects(con: duckdb.DuckDBPyConnection, file_id: str, path: str, rejects: Sequence[Any]) -> None:
    """Rejects: objects with line, byte_offset, reason, detail, raw (bytes; first 1 KB kept, decoded leniently)."""
    if not rejects:
        return
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
                r.raw[:1024].decode("utf-8", "replace"),
            ]
            for r in rejects
        ],
    )


def already_ingested(con: duckdb.DuckDBPyConnection, file_id: str) -> tuple[str, Any] | None:
    rows = con.execute("select path, ingested_at from ingest_ledger where file_id = ?", [file_id]).fetchall()
    return (str(rows[0][0]), rows[0][1]) if rows else None


def write_ledger(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> None:
    names = list(row)
    con.execute(
        f"insert into ingest_ledger ({', '.join(names)}) values ({', '.join('?' * len(names))})",
        [row[n] for n in names],
    )
