"""The embedded DuckDB store: schema, connections, transactions.

Times are stored as naive ``TIMESTAMP`` in UTC. Every DuckDB error that reaches a user is converted here (or in
``cli.main``) into a :class:`StoreError` with one line of text.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

if TYPE_CHECKING:
    import polars as pl

from specdiag.errors import StoreError

DEFAULT_DB = "specdiag.duckdb"
MEMORY_ENV = "SPECDIAG_MEMORY_LIMIT"  # DuckDB memory limit for every connection, e.g. "1GB"
SCHEMA_VERSION = 1

# Grain and meaning of each table. Column names follow the glossary in docs/glossary.md.
SCHEMA = """
create table if not exists schema_info (version integer not null);

-- one row per ingested file (or stdin stream); committed in the same transaction as the rows it added
create table if not exists ingest_ledger (
    file_id        varchar primary key,   -- sha256 of the (decompressed) content: the fingerprint
    path           varchar not null,
    format         varchar not null,      -- trace, vllm-v1-log, sglang-log, prometheus, ...
    ingested_at    timestamp not null,
    lines          bigint not null,       -- = stored_lines + duplicates + blank + rejected + other_lines
    stored_lines   bigint not null,       -- lines that became stored rows (a request with its nested steps, a flat step)
    requests       bigint not null,       -- request rows stored
    steps          bigint not null,       -- step rows stored
    windows        bigint not null,       -- window rows stored
    duplicates     bigint not null,
    blank          bigint not null,
    rejected       bigint not null,
    other_lines    bigint not null        -- engine logs: lines that match no metrics pattern
);

-- one row per request (trace format v1, or a per-request engine record)
create table if not exists requests (
    request_id     varchar not null,      -- unique across the store (first write wins)
    source         varchar not null,      -- 'trace' or engine format, e.g. 'vllm-request', 'sglang-request'
    ts             timestamp not null,    -- arrival, UTC
    deployment     varchar not null,
    target_model   varchar,
    draft_model    varchar,
    tau            integer,               -- configured draft length; 0 = speculation off (control traffic)
    temperature    double,
    top_p          double,
    task           varchar,
    acceptance     varchar,               -- acceptance rule if logged: strict | rejection | typical | ...
    prompt         varchar,               -- null when absent or redacted
    output         varchar,
    prompt_hash    varchar,               -- keyed hash (HMAC-SHA256, hex) when --redact was used
    output_hash    varchar,
    prompt_chars   bigint,
    output_chars   bigint,
    prompt_tokens  bigint,
    output_tokens  bigint,
    latency_ms     double,
    ttft_ms        double,
    batch_size     integer,
    quality        double,                -- [0, 1]
    shadow_match   boolean,
    -- totals over the request's steps (or as printed by the engine for per-request records)
    verify_steps   bigint,                -- steps with drafted > 0
    drafted        bigint,
    accepted       bigint,
    draft_ms       double,                -- sum over steps
    verify_ms      double,                -- sum over steps
    accepted_per_position bigint[],       -- steps whose accepted count reached i+1 (engine records)
    acceptance_histogram  bigint[],       -- steps with exactly i accepted (engine records)
    extra          json,                  -- every field not in the schema, kept verbatim
    file_id        varchar,
    line           bigint
);

-- one row per verify step of a request (tau = 0 requests have decode steps with drafted = 0)
create table if not exists steps (
    request_id     varchar not null,
    step           integer not null,      -- index in the request
    drafted        integer not null,
    accepted       integer not null,      -- length of the accepted prefix, 0 <= accepted <= drafted
    draft_ms       double,
    verify_ms      double,
    batch_size     integer,
    ts             timestamp,
    draft_token_ids integer[],
    draft_probs    double[],              -- q of each drafted token
    target_probs   double[],              -- p of each drafted token
    extra          json                   -- every step field not in the schema, kept
);

-- engine metrics normalised to windows of counts (see docs/engine-formats.md)
create table if not exists windows (
    source         varchar not null,      -- engine and format version, e.g. 'vllm-v1-log/2025-09'
    deployment     varchar not null,
    engine         varchar,               -- engine / DP rank index as printed (leading zeros dropped)
    instance       varchar,               -- the process or scrape target the counts come from, when known
    from_samples   boolean not null default false, -- differenced from counter_samples (rebuilt on each ingest)
    start_ts       timestamp,
    end_ts         timestamp not null,
    tau            integer,               -- num speculative tokens when known
    verify_steps   double,                -- derived where not printed (see formulas in docs)
    drafted        bigint,
    accepted       bigint,
    accepted_per_position double[],       -- counts, not rates (derived counts may be fractional)
    mean_acceptance_length double,        -- as computed from counts, else as printed
    printed_mean_acceptance_length double,
    printed_acceptance_rate double,
    printed_per_position double[],
    throughput_tokens_s double,
    running_requests double,
    draft_ms_per_token double,            -- stage timings where printed
    scoring_ms     double,
    verification_ms double,
    extra          json,
    file_id        varchar,
    line           bigint
);

-- raw cumulative counters (Prometheus scrapes, vLLM V0 log lines); windows with from_samples are their differences
create table if not exists counter_samples (
    source         varchar not null,
    deployment     varchar not null,
    engine         varchar,
    instance       varchar,
    ts             timestamp not null,
    tau            integer,
    verify_steps   double,                -- cumulative since process start
    drafted        double,
    accepted       double,
    accepted_per_position double[],
    window_fields  json,                  -- non-cumulative fields copied to the window ending here
    file_id        varchar,
    line           bigint
);

-- the key of `ingest --redact` when $SPECDIAG_REDACT_KEY is not set (one row)
create table if not exists redact_key (key varchar not null);

create table if not exists rejects (
    file_id        varchar,
    path           varchar not null,
    line           bigint not null,       -- 1-based
    byte_offset    bigint not null,       -- of the line start in the (decompressed) stream
    reason         varchar not null,      -- one of specdiag.rejects.REASONS
    detail         varchar,
    raw            varchar                -- first 1 KB of the line (decoded with replacement)
);

-- diagnose results, numbered so that `flag --finding N` and `replay --finding N` can refer to them
create table if not exists findings (
    finding_id     integer not null,
    run_at         timestamp not null,
    kind           varchar not null,
    deployment     varchar,
    segment        json,
    severity       varchar not null,
    summary        varchar not null,
    evidence       json,
    since          timestamp
);

-- replay results
create table if not exists replay_runs (
    run_id         varchar not null,
    prompt_id      varchar not null,
    request_id     varchar,
    finding_id     integer,
    created_at     timestamp not null,
    target         varchar,
    draft          varchar,
    device         varchar,
    dtype          varchar,
    tau            integer,
    temperature    double,
    top_p          double,
    acceptance     varchar,
    seed           bigint,
    steps          integer,
    drafted        integer,
    accepted       integer,
    acceptance_rate double,
    mean_acceptance_length double,
    draft_ms       double,
    verify_ms      double,
    target_only_ms double,
    speedup        double,
    matches_target_only boolean,
    tv_max         double,
    tv_mean        double,
    output_text    varchar,
    first_divergence json,
    batch_size     integer                -- rows replayed together (--batch-size); draft/verify ms are shares
);

create table if not exists replay_steps (
    run_id         varchar not null,
    prompt_id      varchar not null,
    step           integer not null,
    drafted        integer not null,
    accepted       integer not null,
    draft_ms       double,
    verify_ms      double
);

create table if not exists replay_tokens (
    run_id         varchar not null,
    prompt_id      varchar not null,
    step           integer not null,
    position       integer not null,      -- index within the step's draft (0-based)
    token_id       integer not null,
    token_text     varchar,
    q              double,                -- draft probability of the drafted token
    p              double,                -- target probability of the drafted token
    accepted       boolean not null,
    entropy        double,                -- target entropy at that position (nats)
    margin         double                 -- target top-1 minus top-2 probability
);

-- measured forward-pass costs (replay --profile-costs); recommend prefers these to fitted costs
create table if not exists cost_profiles (
    profile_id     varchar not null,
    created_at     timestamp not null,
    target         varchar,
    draft          varchar,
    device         varchar,
    dtype          varchar,
    batch_size     integer not null,
    n_tokens       integer not null,      -- tokens per sequence in one target forward pass
    target_ms      double not null,
    draft_ms_per_token double
);

-- one row per request: its totals (summed from its steps where the request row has none) and the segment
-- buckets diagnose compares. The shared base of queries/diagnose_*.sql.
create or replace view request_facts as
with step_totals as (
    -- requests stored without totals (trace lines without them): sum their steps
    select
        request_id,
        count(*) filter (where drafted > 0) as verify_steps,
        count(*) as decode_steps,
        sum(drafted) as drafted,
        sum(accepted) as accepted,
        sum(draft_ms) as draft_ms,
        sum(verify_ms) as verify_ms
    from steps
    where request_id in (select request_id from requests where drafted is null)
    group by request_id
),

req as (
    -- one row per request with its totals and the segment buckets diagnose compares
    select
        r.request_id,
        r.ts,
        date_trunc('hour', r.ts) as hour,
        r.deployment,
        coalesce(r.task, 'unknown') as task,
        coalesce(r.target_model, 'unknown') as target_model,
        coalesce(r.draft_model, 'unknown') as draft_model,
        coalesce(r.tau, 0) as tau,
        r.temperature,
        r.top_p,
        r.acceptance,
        r.quality,
        r.shadow_match,
        r.batch_size,
        r.prompt,
        r.prompt_tokens,
        r.output_tokens,
        coalesce(r.drafted, s.drafted, 0) as drafted,
        coalesce(r.accepted, s.accepted, 0) as accepted,
        coalesce(r.verify_steps, s.verify_steps, 0) as verify_steps,
        coalesce(r.draft_ms, s.draft_ms) as draft_ms,
        coalesce(r.verify_ms, s.verify_ms) as verify_ms,
        -- decode time of the request in ms: the step timings when logged, else latency after the first token
        coalesce(
            coalesce(r.draft_ms, s.draft_ms, 0) + coalesce(r.verify_ms, s.verify_ms),
            r.latency_ms - coalesce(r.ttft_ms, 0)
        ) as decode_ms,
        case
            when r.temperature is null then 'unknown'
            when r.temperature = 0 then '0'
            when r.temperature <= 0.5 then '(0,0.5]'
            when r.temperature <= 1.0 then '(0.5,1]'
            else '>1'
        end as temperature_bucket,
        case
            when r.batch_size is null then 'unknown'
            when r.batch_size <= 8 then '1-8'
            when r.batch_size <= 32 then '9-32'
            when r.batch_size <= 128 then '33-128'
            else '>128'
        end as batch_bucket,
        case
            when r.prompt_tokens is null then 'unknown'
            when r.prompt_tokens < 256 then '<256'
            when r.prompt_tokens < 1024 then '256-1023'
            when r.prompt_tokens < 4096 then '1024-4095'
            else '>=4096'
        end as prompt_length_bucket
    from requests as r
    left join step_totals as s on s.request_id = r.request_id
)
select * from req;
"""


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str | None]:
    """A table's columns in their stored order, each with its default expression (temporary tables included)."""
    rows = con.execute(
        "select column_name, column_default from duckdb_columns() where table_name = ? order by column_index",
        [table],
    ).fetchall()
    return {name: default for name, default in rows}


def insert_frame(
    con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame, select: dict[str, str]
) -> None:
    """Append ``frame``'s rows to ``table``, each column computed by its SQL expression in ``select`` (the others
    get their default, else null), as ``insert into table (...) select ...`` would.

    Through a relation rather than ``register()``: DuckDB keeps a registered Arrow table referenced until the
    transaction commits, so in a file's single transaction every block's tables would pile up in memory. The SQL
    text holds only the caller's fixed expressions and the table's own column names and defaults (from
    ``duckdb_columns()``).
    """
    columns = table_columns(con, table)
    if not columns:  # the identifiers below are the catalog's own: an unknown table name never reaches SQL
        raise ValueError(f"no table {table!r} in the store")
    unknown = sorted(set(select) - set(columns))
    if unknown:
        raise ValueError(f"{table} has no column(s) {', '.join(unknown)}")
    if frame.is_empty():
        return
    projection = ", ".join(f"{select.get(c) or columns[c] or 'null'} as {c}" for c in columns)
    con.from_arrow(frame.to_arrow()).project(projection).insert_into(table)


def resolve_db(path: str | os.PathLike[str] | None) -> Path:
    if path:
        return Path(path)
    return Path(os.environ.get("SPECDIAG_DB") or DEFAULT_DB)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connect(
    path: str | os.PathLike[str] | None = None, *, read_only: bool = False
) -> duckdb.DuckDBPyConnection:
    """Open the store, creating the schema when writable.

    A read-only open of a missing file is an error that tells the user to ingest first; a file locked by another
    writer is an error that says so.
    """
    db = resolve_db(path)
    if read_only and not db.exists():
        raise StoreError(f"no database at {db}", hint="run `specdiag ingest` first or pass --db")
    if not read_only and db.parent and not db.parent.exists():
        raise StoreError(f"cannot create database {db}: folder {db.parent} does not exist")
    try:
        con = duckdb.connect(str(db), read_only=read_only)
    except duckdb.IOException as exc:
        text = _first_line(exc)
        if "lock" in text.lower():
            raise StoreError(
                f"database {db} is in use by another process",
                hint="wait for the other specdiag run to finish",
            ) from exc
        raise StoreError(f"cannot open database {db}: {text}") from exc
    except duckdb.Error as exc:
        # a CSV or JSON file, which DuckDB opens as an in-memory database (refused read-only)
        if read_only and "in-memory database" in _first_line(exc):
            raise StoreError(
                f"{db} is not a DuckDB database file", hint="pass --db with a .duckdb file"
            ) from exc
        raise StoreError(f"cannot open database {db}: {_first_line(exc)}") from exc
    # DuckDB's own progress bar would interleave with ours on stderr.
    con.execute("set enable_progress_bar = false")
    limit = os.environ.get(MEMORY_ENV)
    if limit:  # DuckDB spills joins and aggregates to disk beyond it (default: 80% of RAM)
        try:
            con.execute("set memory_limit = $limit", {"limit": limit})
        except duckdb.Error as exc:
            con.close()
            raise StoreError(
                f"${MEMORY_ENV}={limit!r} is not a memory size", hint="e.g. 1GB or 512MB"
            ) from exc
    try:
        con.execute("set timezone = 'UTC'")  # needs the ICU extension; TIMESTAMP columns are UTC either way
    except duckdb.Error:
        pass
    _check_is_store(con, db)
    if not read_only:
        ensure_schema(con)
    return con


def _check_is_store(con: duckdb.DuckDBPyConnection, db: Path) -> None:
    """A DuckDB file with tables but no schema_info belongs to something else: never add specdiag's tables to it.

    DuckDB opens an existing CSV or JSON file as an in-memory database (no path): everything written to it would
    be lost when the command ends, so such a file is refused too.
    """
    [(path,)] = con.execute(
        "select path from duckdb_databases() where database_name = current_database()"
    ).fetchall()
    if path is None and str(db) != ":memory:":  # asked for in memory (tests): fine
        con.close()
        raise StoreError(f"{db} is not a DuckDB database file", hint="pass --db with a .duckdb file")
    tables = {
        name
        for (name,) in con.execute(
            "select table_name from duckdb_tables() where schema_name = 'main'"
        ).fetchall()
    }
    if tables and "schema_info" not in tables:
        con.close()
        raise StoreError(
            f"{db} is a DuckDB database but not a specdiag store (it has no schema_info table)",
            hint="pass --db with a specdiag store, or a new file name to create one",
        )
    if "schema_info" in tables:
        [(version,)] = con.execute("select max(version) from schema_info").fetchall()
        if version is not None and version > SCHEMA_VERSION:
            con.close()
            raise StoreError(
                f"{db} was written by a newer specdiag (store version {version})", hint="upgrade specdiag"
            )


# Columns added after a table first shipped: a store created earlier gains them (at the end, as in SCHEMA).
ADDED_COLUMNS = ("alter table replay_runs add column if not exists batch_size integer",)


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(SCHEMA)
    for statement in ADDED_COLUMNS:
        con.execute(statement)
    # fetchall, not fetchone: a half-read result keeps the connection busy for the next statement
    if con.execute("select count(*) from schema_info").fetchall()[0][0] == 0:
        con.execute("insert into schema_info values (?)", [SCHEMA_VERSION])


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All or nothing: commit on success, roll back on any exception (which is re-raised)."""
    con.execute("begin transaction")
    try:
        yield con
    except BaseException:
        con.execute("rollback")
        raise
    con.execute("commit")
