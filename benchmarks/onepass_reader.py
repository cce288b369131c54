"""Prototype of a one-pass ingest: DuckDB reads a clean trace file itself, checks it in SQL and appends it.

A feasibility prototype, measured by ``benchmarks/ingest_onepass.py`` (docs/benchmarks.md, section Ingest); ``specdiag
ingest`` does not use it: on the benchmark it was not faster than the block path. For a file (plain, gzip or zstd)
whose every line it can prove valid, DuckDB's C++ JSON reader replaces pyarrow, polars and the block loop. Proving it takes three things, and any doubt returns the file to the
block path (``ingest_trace``), which locates and rejects bad lines with their reasons:

1. ``ingest_scan``: each line is blank or one ``{...}`` object with none of the forms DuckDB accepts and the format
   refuses; the row count then ties rows to lines (``ordinality`` = n-th non-blank line).
2. DuckDB's type inference over the whole file (``sample_size=-1``): each field the format knows was only ever the
   JSON type it must be (an int field only integers: ``3.0``, ``"3"`` or ``true`` anywhere make it DOUBLE, VARCHAR or
   JSON), and no field outside the format occurs (those belong in ``extra``; the block path keeps them). Only then
   is the file read with explicit types, so no value is silently cast.
3. ``clean.sql``-style checks over the read rows: required fields, ranges, ``accepted <= drafted``, step indices
   unique per request, timestamps as ``traceformat.parse_ts`` reads them. One failing row sends the file back.

Rows are then written with the block path's semantics (``ingest_store.write_trace_rows``): first write wins by
request_id and by (request_id, step), in line order, against the store and within the file.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import duckdb
from onepass_scan import Scan, scan_file  # benchmarks/onepass_scan.py

from specdiag.ingest_read import Source, TruncatedInput
from specdiag.traceformat import EPOCH_MAX_S, FLAT_STEP_FIELDS, REQUEST_FIELDS, STEP_FIELDS, TS_PATTERN

# DuckDB's inferred types that come only from JSON strings (it detects dates, times and UUIDs in text)
_TEXT = {"VARCHAR", "DATE", "TIME", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "UUID"}
_NULL = '"NULL"'
# kind -> inferred types that prove every value had the kind's JSON type -> the type it is read as
_FITS: dict[str, tuple[set[str], str]] = {
    "str": (_TEXT, "VARCHAR"),
    "int": ({"BIGINT"}, "BIGINT"),
    "num": ({"BIGINT", "DOUBLE"}, "DOUBLE"),
    "bool": ({"BOOLEAN"}, "BOOLEAN"),
    "ints": ({"BIGINT[]"}, "BIGINT[]"),
    "probs": ({"BIGINT[]", "DOUBLE[]"}, "DOUBLE[]"),
}
_TOP = {**REQUEST_FIELDS, **FLAT_STEP_FIELDS}
_REQUEST_ONLY = [n for n in REQUEST_FIELDS if n not in FLAT_STEP_FIELDS]
_STEP_ONLY = [n for n in FLAT_STEP_FIELDS if n not in REQUEST_FIELDS]
# epoch seconds below 9e9: seconds * 1e6 is exact in a double, so DOUBLE and BIGINT values convert alike
_EPOCH_FAST_MAX = min(9e9, EPOCH_MAX_S)


class NotProvable(Exception):
    """The file cannot be proved clean by this path (the message says why); the block path takes it."""


@dataclass
class Plan:
    """What the inference found: the type each present field is read as ("JSON[]": lists that must be empty)."""

    top: dict[str, str]  # top-level field -> DuckDB type
    step: dict[str, str]  # nested step field -> DuckDB type


_EMPTY = "JSON[]"  # a list field with no element anywhere in the file (the checks require every list empty)


def _read_args(compression: str) -> str:
    # fixed option text; the path and the columns are bound parameters
    if compression not in COMPRESSION.values():  # the one word written into the SQL: allow-listed here too
        raise ValueError(f"not a compression read_json takes: {compression!r}")
    return (
        f"format = 'newline_delimited', compression = '{compression}', "
        "map_inference_threshold = -1, field_appearance_threshold = 0, dateformat = '%Y', timestampformat = '%Y'"
    )


def _kind_type(name: str, kind: str, inferred: str) -> str:
    """The type a field of ``kind`` is read as, given what inference saw; NotProvable if its values do not fit."""
    if inferred == _NULL:  # every value null: nothing is cast
        return "VARCHAR" if kind == "ts" else _FITS[kind][1]
    if inferred == _EMPTY and kind in (
        "ints",
        "probs",
    ):  # no element anywhere (checked to be empty after the read)
        return _EMPTY
    if kind == "ts":  # text or epoch seconds (JSON: both occur; each value is judged by its own JSON type)
        if inferred in _TEXT:
            return "VARCHAR"
        if inferred in ("BIGINT", "DOUBLE", "JSON"):
            return inferred
    elif inferred in _FITS[kind][0]:
        return _FITS[kind][1]
    raise NotProvable(f"{name} was read as {inferred}")


def plan(con: duckdb.DuckDBPyConnection, path: str, compression: str) -> Plan:
    """Infer every field's JSON type over the whole file and decide the explicit read (NotProvable if unsure)."""
    rel = con.sql(
        f"select * from read_json($path, sample_size = -1, {_read_args(compression)})", params={"path": path}
    )
    top: dict[str, str] = {}
    step: dict[str, str] = {}
    for name, dtype in zip(rel.columns, rel.types):
        inferred = str(dtype)
        if name not in _TOP:
            raise NotProvable(f"field {name!r} outside the format (kept in extra by the block path)")
        kind = _TOP[name][0]
        if kind != "steps":
            top[name] = _kind_type(name, kind, inferred)
            continue
        if inferred in (_NULL, _EMPTY):  # no step object anywhere: null or lists checked to be empty
            top[name] = _EMPTY
            continue
        element: Any = cast(Any, dtype).children[0][1] if cast(Any, dtype).id == "list" else None
        if element is None or element.id != "struct":
            raise NotProvable(f"steps was read as {inferred}")
        for child, ctype in element.children:
            if child not in STEP_FIELDS:
                raise NotProvable(
                    f"step field {child!r} outside the format (kept in extra by the block path)"
                )
            step[child] = _kind_type(f"steps[].{child}", STEP_FIELDS[child][0], str(ctype))
        children = ", ".join(f"{_quote(c)} {t}" for c, t in step.items())
        top[name] = f"STRUCT({children})[]"
    return Plan(top, step)


def _quote(name: str) -> str:
    """A field name of the format (a fixed identifier) as SQL."""
    if name not in _TOP and name not in STEP_FIELDS:
        raise ValueError(f"not a field of the format: {name!r}")
    return '"' + name + '"'


def read_rows(con: duckdb.DuckDBPyConnection, path: str, compression: str, p: Plan, scan: Scan) -> None:
    """The file into the temp table ``_raw`` with explicit types: ``_row`` is the n-th row (= non-blank line),
    ``line`` its line number in the file."""
    line = "ordinality"
    join = ""
    if scan.blank_lines:
        # the j-th blank line (1-based, at line b) has b - j non-blank lines before it: rows after that gain j
        con.execute(
            """
            create or replace temp table _gap as
            select b - j as pos, max(j) as n
            from (select unnest($blank) as b, generate_subscripts($blank, 1) as j)
            group by pos
            """,
            {"blank": scan.blank_lines},
        )
        line, join = "ordinality + coalesce(g.n, 0)", "asof left join _gap g on ordinality > g.pos"
    con.execute(
        f"""
        create or replace temp table _raw as
        select ordinality as _row, {line} as line, r.* exclude (ordinality)
        from (select * from read_json($path, columns = $columns, {_read_args(compression)}) with ordinality) r
        {join}
        """,
        {"path": path, "columns": p.top or {"event": "VARCHAR"}},
    )
    n = _scalar(con, "select count(*) from _raw")
    if n != scan.nonblank:
        raise NotProvable(f"{n} rows for {scan.nonblank} non-blank lines")


# traceformat.parse_ts in SQL: RFC 3339 text (offset optional, read as UTC; fraction truncated to microseconds) or
# epoch seconds -> microseconds since the epoch; null where parse_ts would refuse the value. Years are limited to
# 2..9998, where Python's datetime arithmetic cannot overflow; a timestamp outside them is left to the block path.
_MACROS = f"""
create or replace temp macro _ts_parts_us(g) as (
    case when g.y::integer between 2 and 9998 then
        epoch_us(try(make_timestamp(g.y::bigint, g.mo::bigint, g.d::bigint, g.hh::bigint, g.mm::bigint,
                                    g.ss::double)))
        + rpad(substr(g.frac, 2, 6), 6, '0')::bigint
        - case when g.off in ('', 'Z', 'z') then 0
               else (case when g.off[1] = '+' then 1 else -1 end)
                    * (substr(g.off, 2, 2)::bigint * 3600 + substr(g.off, 5, 2)::bigint * 60) * 1000000
          end
    end
);
create or replace temp macro _ts_text_us(t) as (
    case when regexp_full_match(t, '{TS_PATTERN}') then
        _ts_parts_us(regexp_extract(t, '{TS_PATTERN}', ['y', 'mo', 'd', 'hh', 'mm', 'ss', 'frac', 'off']))
    end
);
create or replace temp macro _ts_epoch_us(t) as (
    case when t >= 0 and t < {_EPOCH_FAST_MAX!r} then round_even(t * 1e6, 0)::bigint end
);
create or replace temp macro _ts_json_us(j) as (
    case json_type(j)
        when 'VARCHAR' then _ts_text_us(j ->> '$')
        when 'UBIGINT' then _ts_epoch_us(j::ubigint::double)
        when 'DOUBLE' then _ts_epoch_us(j::double)
    end
);
"""


def _ts_us(col: str, dtype: str | None) -> str:
    """SQL for the microseconds of a ts column read as ``dtype`` (None: absent)."""
    if dtype is None:
        return "null::bigint"
    if dtype == "JSON":
        return f"_ts_json_us({col})"
    return f"_ts_text_us({col})" if dtype == "VARCHAR" else f"_ts_epoch_us({col})"


def _num(x: float) -> str:
    return f"'{x!r}'::double" if x in (float("inf"), float("-inf")) else repr(x)


def _range_ok(col: str, kind: str, rng: tuple[float, float, bool] | None) -> str:
    """SQL true when ``col`` (null allowed) is in the field's range, as traceformat._check_value checks it."""
    if rng is None:
        return "true"
    low, high, low_open = rng

    def inside(x: str) -> str:
        finite = f"isfinite({x}) and " if kind in ("num", "probs") else ""
        return f"({finite}{x} {'>' if low_open else '>='} {_num(low)} and {x} <= {_num(high)})"

    if kind in ("ints", "probs"):  # every element present and inside
        each = f"list_transform({col}, lambda x: coalesce({inside('x')}, false))"
        return f"({col} is null or coalesce(list_bool_and({each}), true))"  # an empty list passes
    return f"({col} is null or {inside(col)})"


def _fields_ok(
    fields: dict[str, tuple[str, Any]], required: tuple[str, ...], present: dict[str, str], prefix: str = ""
) -> list[str]:
    """SQL conditions a record of ``fields`` must meet (columns as ``prefix`` + name; absent ones are null)."""
    conds = []
    for name in required:
        if name not in present:
            return ["false"]
        conds.append(f"{prefix}{_quote(name)} is not null")
    for name in ("request_id", "deployment"):
        if name in fields and name in present:
            conds.append(f"coalesce({prefix}{_quote(name)} <> '', true)")
    for name, (kind, rng) in fields.items():
        if name in present and present[name] == _EMPTY:
            conds.append(f"coalesce(len({prefix}{_quote(name)}) = 0, true)")
        elif name in present and kind not in ("ts", "steps", "str", "bool"):
            conds.append(_range_ok(prefix + _quote(name), kind, rng))
    if "accepted" in present and "drafted" in present:
        conds.append(f"coalesce({prefix}accepted <= {prefix}drafted, true)")
    return conds


def check_rows(con: duckdb.DuckDBPyConnection, p: Plan) -> None:
    """NotProvable unless every row of ``_raw`` (and every nested step) is valid v1 as traceformat defines it."""
    top = p.top
    ev = "coalesce(event, 'request')" if "event" in top else "'request'"
    absent = {
        "request": [n for n in _STEP_ONLY if n in top],
        "step": [n for n in _REQUEST_ONLY if n in top],
    }
    req = _fields_ok(
        REQUEST_FIELDS, ("request_id", "ts", "deployment", "target_model", "draft_model", "tau"), top
    )
    req += [f"{_quote(n)} is null" for n in absent["request"]]
    flat = _fields_ok(FLAT_STEP_FIELDS, ("request_id", "step", "drafted", "accepted"), top)
    flat += [f"{_quote(n)} is null" for n in absent["step"]]
    ts_ok = f"(ts is null or {_ts_us('ts', top.get('ts'))} is not null)" if "ts" in top else "true"
    steps_ok = "true"
    if top.get("steps") == _EMPTY:
        steps_ok = "coalesce(len(steps) = 0, true)"
    elif "steps" in top:  # no null step objects
        steps_ok = "coalesce(list_count(steps) = len(steps), true)"
    row_ok = (
        f"case {ev} when 'request' then {' and '.join(req)} when 'step' then {' and '.join(flat)} else false end"
        f" and {ts_ok} and {steps_ok}"
    )
    bad = con.execute(f"select count(*) filter (where not coalesce({row_ok}, false)) from _raw").fetchone()
    if bad is None or bad[0]:
        raise NotProvable(f"{bad[0] if bad else '?'} rows fail the checks")
    if not p.step:
        return
    nested = _fields_ok(STEP_FIELDS, ("step", "drafted", "accepted"), p.step, prefix="s.")
    nested.append(
        f"(s.ts is null or {_ts_us('s.ts', p.step.get('ts'))} is not null)" if "ts" in p.step else "true"
    )
    got = con.execute(
        f"""
        select count(*) filter (where not coalesce({" and ".join(nested)}, false)),
               count(*) - count(distinct (_row, s.step))
        from (select _row, unnest(steps) as s from _raw where {ev} = 'request')
        """
    ).fetchone()
    if got is None or got[0] or got[1]:
        raise NotProvable(
            f"nested steps: {got[0] if got else '?'} fail the checks, {got[1] if got else '?'} repeated"
        )


@dataclass
class Counts:
    requests: int = 0
    steps: int = 0
    stored_lines: int = 0
    duplicates: int = 0


def _col(present: dict[str, str], name: str, prefix: str = "") -> str:
    """A field as SQL: null when absent, a list with no element anywhere as the list type it is stored as."""
    if name not in present:
        return "null"
    if present[name] == _EMPTY:
        return f"{prefix}{_quote(name)}::{_FITS[STEP_FIELDS[name][0]][1]}"
    return f"{prefix}{_quote(name)}"


def write_rows(con: duckdb.DuckDBPyConnection, p: Plan, file_id: str) -> Counts:
    """``_raw`` into requests and steps with ``write_trace_rows``' semantics (first write wins, in line order).

    Request totals come from the request's nested steps (they replace logged totals where not null); a request
    that gets flat steps, or already had steps stored, is recomputed from the stored steps at the end of the file
    (``update_totals`` over ``_touched``). A step key given both nested and on a flat line of the same file is
    left to the block path.
    """
    top, step = p.top, p.step
    ev = "coalesce(event, 'request')" if "event" in top else "'request'"
    # the first line of each request id, unless the id is already stored
    con.execute(
        f"""
        create or replace temp table _new as
        select _row, request_id from (
            select _row, request_id from _raw where {ev} = 'request'
            qualify row_number() over (partition by request_id order by _row) = 1
        ) r anti join requests t using (request_id)
        """
    )
    flat_lines = _scalar(con, "select count(*) from _raw where event = 'step'") if "event" in top else 0
    step_cols = ["step", "drafted", "accepted", "draft_ms", "verify_ms", "batch_size"]
    step_cols += ["draft_token_ids", "draft_probs", "target_probs"]
    nested_cols = ", ".join(f"{_col(step, c, 's.')} as {c}" for c in step_cols)
    nested = (
        f"select r.request_id, {nested_cols}, "
        f"{_ts_us('s.ts', step.get('ts'))} as ts_us "
        "from (select r.request_id, unnest(r.steps) as s from _raw r semi join _new n using (_row)) r"
    )
    if not step:
        nested = "select * from _flat where false"
    # flat step lines: the first line of each (request_id, step) key
    flat_cols = ", ".join(f"{_col(top, c)} as {c}" for c in step_cols)
    con.execute(
        f"""
        create or replace temp table _flat as
        select request_id, {flat_cols},
               {_ts_us("ts", top.get("ts"))} as ts_us
        from _raw where {ev} = 'step'
        qualify row_number() over (partition by request_id, step order by _row) = 1
        """
    )
    if flat_lines and step:  # the nested steps of requests that also have flat step lines
        nested_of_flat = nested.replace(
            "from _raw r semi join _new n using (_row)",
            "from _raw r semi join _new n using (_row) where r.request_id in (select request_id from _flat)",
        )
        both = f"select count(*) from ({nested_of_flat}) x semi join _flat f using (request_id, step)"
        if _scalar(con, both):
            raise NotProvable("a step given both nested and on a flat line")
    # ids whose steps are partly stored already (flat lines of an earlier file): only their new steps are added
    con.execute(
        """
        create or replace temp table _with_steps as
        select distinct request_id from steps
        where request_id in (select request_id from _new union all select request_id from _flat)
        """
    )
    stored = "anti join (select request_id, step from steps semi join _with_steps using (request_id)) t "
    stored += "using (request_id, step)"
    if not _scalar(con, "select count(*) from _with_steps"):
        stored = ""
    con.execute(
        "insert into _touched select distinct request_id from _flat union select request_id from _with_steps"
    )
    req_cols = [n for n in REQUEST_FIELDS if n not in ("event", "ts", "steps")]
    totals = ("verify_steps", "drafted", "accepted", "draft_ms", "verify_ms")
    sel = []
    for name in req_cols:
        value = _col(top, name, "r.")
        if name in totals:
            value = f"coalesce(a.{name}, {value})"
        elif name in ("temperature", "top_p"):  # the format's defaults
            value = f"coalesce({value}, {'0.0' if name == 'temperature' else '1.0'})"
        sel.append(f"{value} as {name}")
    con.execute(
        f"""
        insert into requests by name
        select {", ".join(sel)}, 'trace' as source, make_timestamp({_ts_us("r.ts", top.get("ts"))}) as ts,
               length({_col(top, "prompt", "r.")}) as prompt_chars,
               length({_col(top, "output", "r.")}) as output_chars,
               $file_id as file_id, r.line as line
        from _raw r semi join _new n using (_row)
        left join (
            select request_id, count(*) filter (where drafted > 0) as verify_steps, sum(drafted) as drafted,
                   sum(accepted) as accepted, sum(draft_ms) as draft_ms, sum(verify_ms) as verify_ms
            from ({nested}) x
            where request_id not in (select request_id from _touched)
            group by request_id
        ) a using (request_id)
        """,
        {"file_id": file_id},
    )
    c = Counts(requests=_scalar(con, "select count(*) from _new"))
    ts = "case when ts_us is null then null else make_timestamp(ts_us) end as ts"
    for source in (nested, "select * from _flat"):
        inserted = con.execute(
            f"insert into steps by name select request_id, {', '.join(step_cols)}, {ts} from ({source}) x {stored}"
        ).fetchone()
        c.steps += int(inserted[0]) if inserted else 0
        if source != nested:
            flat_stored = int(inserted[0]) if inserted else 0
    request_lines = _scalar(con, f"select count(*) from _raw where {ev} = 'request'")
    c.stored_lines = c.requests + flat_stored
    c.duplicates = (request_lines - c.requests) + (flat_lines - flat_stored)
    return c


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


# how DuckDB's reader refuses a file it cannot read as asked (malformed JSON, a duplicate key, a value it cannot
# cast, a broken compressed stream); any other error is a fault of this module and is raised as it is
_REFUSED = (duckdb.InvalidInputException, duckdb.ConversionException, duckdb.IOException)
COMPRESSION = {"none": "none", "gzip": "gzip", "zstd": "zstd"}  # Source.compression -> read_json's option


@dataclass
class Prepared:
    """A file this path will try: its scan, its inferred read, its content fingerprint (SHA-256 hex)."""

    path: str
    compression: str
    scan: Scan
    plan: Plan
    fingerprint: str
    stamp: tuple[int, int]  # size and mtime (ns) when the scan began: DuckDB must read the same file


def _stamp(path: str) -> tuple[int, int]:
    st = Path(path).stat()
    return st.st_size, st.st_mtime_ns


def prepare(
    con: duckdb.DuckDBPyConnection, source: Source, on_progress: Callable[[int], None] | None = None
) -> Prepared:
    """Scan the file's bytes (in a worker thread) while DuckDB infers its types; NotProvable if either has doubts.

    The fingerprint is that of the content the scan read (a file may have changed since the caller hashed it).
    DuckDB reads the file itself, so the path must name a regular file without glob characters (read_json would
    expand them) and the compression must be one DuckDB reads.
    """
    path = str(Path(source.path).resolve())
    if any(ch in path for ch in "*?[]{}") or not Path(path).is_file():
        raise NotProvable("not a plain path to a regular file")
    if source.compression not in COMPRESSION:
        raise NotProvable(f"compression {source.compression}")
    compression = COMPRESSION[source.compression]
    stamp = _stamp(path)
    copy = Source(source.path, source.size)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="specdiag-scan") as pool:
        scanning = pool.submit(scan_file, copy, on_progress)
        con.execute(_MACROS)
        threads = con.execute("select current_setting('threads')").fetchone()
        con.execute("set threads = 1")  # the inference ran in one thread when measured: the other core scans
        try:
            p: Plan | None = plan(con, path, compression)
        except (NotProvable, *_REFUSED):
            p = None
        finally:
            con.execute("set threads = $n", {"n": threads[0] if threads else 1})
        try:
            scan = scanning.result()
        except TruncatedInput as exc:
            raise NotProvable(f"compressed stream broken: {exc}") from exc
    if not scan.provable:
        raise NotProvable(scan.why)
    if scan.nonblank == 0:
        raise NotProvable("no line to read")
    if p is None:
        raise NotProvable("DuckDB's inference refused the file")
    return Prepared(path, compression, scan, p, copy.fingerprint.hexdigest(), stamp)


def ingest_clean(con: duckdb.DuckDBPyConnection, prepared: Prepared, file_id: str) -> Counts:
    """Read, check and write one prepared file in the caller's transaction (after ``begin_file``).

    NotProvable when a check fails: the caller rolls back and gives the file to the block path.
    """
    try:
        read_rows(con, prepared.path, prepared.compression, prepared.plan, prepared.scan)
    except _REFUSED as exc:
        raise NotProvable(str(exc).strip().splitlines()[0]) from exc
    if _stamp(prepared.path) != prepared.stamp:
        raise NotProvable("the file changed while it was read")
    check_rows(con, prepared.plan)
    return write_rows(con, prepared.plan, file_id)
