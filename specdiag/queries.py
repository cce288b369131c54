"""Named SQL diagnostics: find ``queries/*.sql``, read their headers, run them with bound parameters, write results.

Each file starts with a header of ``-- key: value`` comment lines (see docs/queries.md)::

    -- name: acceptance_by_segment
    -- description: Acceptance rate and MAL per deployment and task.
    -- grain: one row per (deployment, task)
    -- params: deployment (varchar, default null = all): restrict to one deployment
    -- columns: deployment, task, requests, ...

Parameters use DuckDB session variables, so every file runs as-is in the ``duckdb`` CLI: the SQL reads
``getvariable('deployment')`` (null when unset; defaults are applied in the SQL with ``coalesce``), and both the CLI
user (``set variable deployment = 'chat';``) and :func:`run_query` set the variable first. Here the value is always a
bound parameter: ``set variable deployment = cast($value as varchar)``; the variable name comes from the header and
the type from a fixed allow-list, never from the user.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb

from specdiag.errors import InputError, UsageError
from specdiag.output import dumps
from specdiag.resources import queries_dir

# header type -> the DuckDB type the bound value is cast to
PARAM_TYPES: dict[str, str] = {
    "varchar": "varchar",
    "integer": "integer",
    "bigint": "bigint",
    "double": "double",
    "boolean": "boolean",
    "timestamp": "timestamp",
    "date": "date",
}
FORMATS = ("table", "csv", "json", "parquet")

_HEADER_LINE = re.compile(r"^--\s*(name|description|grain|params|columns):\s*(.*?)\s*$")
_CONTINUATION = re.compile(r"^--\s{2,}(\S.*?)\s*$")  # an indented comment line continues the previous key
# "deployment (varchar, default null = all): restrict to one deployment"; also "$max_pos (integer, ...)"
_PARAM = re.compile(r"^\$?(?P<name>[a-z_][a-z0-9_]*)\s*(?:\((?P<inside>[^)]*)\))?\s*(?::\s*(?P<doc>.*))?$")
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_DOLLAR = re.compile(r"\$([a-z_][a-z0-9_]*)")
_ZONE_SUFFIX = re.compile(r"^(?P<time>.*\d)\s*(?P<zone>[A-Za-z][A-Za-z0-9_+\-/]*)$")  # "2025-03-01 10:00 CET"


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # a key of PARAM_TYPES
    default: str | None  # as written in the header ("null = all", "1"), for --list only: the SQL applies it
    doc: str


@dataclass(frozen=True)
class Query:
    name: str
    path: Path
    description: str
    grain: str
    params: tuple[Param, ...] = ()
    columns: tuple[str, ...] = ()
    sql: str = field(default="", repr=False)


def parse_header(path: Path, text: str) -> Query:
    """Read the ``-- key: value`` lines at the top of a query file; a header without its keys is an InputError."""
    values: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.startswith("--"):
            break
        match = _HEADER_LINE.match(line)
        if match:
            key, value = match.groups()
            values[key] = f"{values[key]}; {value}" if key in values else value
        elif key and (cont := _CONTINUATION.match(line)):
            values[key] += " " + cont.group(1)
        else:
            key = ""  # a free-form comment ends the previous key
    for required in ("name", "description", "grain", "columns"):
        if required not in values:
            raise InputError(f"{path}:1: query header lacks `-- {required}:`")
    if values["name"] != path.stem:
        raise InputError(f"{path}:1: header name {values['name']!r} differs from the file name {path.stem!r}")
    columns = tuple(c for c in _split_top_level(values["columns"]) if c)
    params = tuple(_parse_param(p.strip()) for p in values.get("params", "").split(";") if p.strip())
    return Query(
        values["name"],
        path,
        values["description"],
        values["grain"],
        tuple(p for p in params if p is not None),
        columns,
        text,
    )


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses; drop the parenthesised notes: ``a, b (x, y), c`` -> a, b, c."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "("
        depth -= char == ")" and depth > 0
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        elif depth == 0 and char != ")":
            current += char
    parts.append(current)
    return [p.strip() for p in parts]


def _parse_param(text: str) -> Param | None:
    """``name (type[, default value][, note]): description``; ``none`` declares no parameter."""
    match = _PARAM.match(text)
    if text.lower() == "none" or not match:
        return None
    type_, default, notes = "varchar", None, []
    for part in (match["inside"] or "").split(","):
        part = part.strip()
        if part in PARAM_TYPES:
            type_ = part
        elif part.startswith("default "):
            default = part.removeprefix("default ").strip()
        elif part:
            notes.append(part)
    doc = "; ".join([*notes, *([match["doc"].strip()] if match["doc"] else [])])
    return Param(match["name"], type_, default, doc)


def list_queries(folder: Path | None = None) -> list[Query]:
    folder = folder or queries_dir()
    return [parse_header(p, p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.sql"))]


def find_query(name: str, folder: Path | None = None) -> Query:
    folder = folder or queries_dir()
    if not _NAME.match(name) or not (folder / f"{name}.sql").is_file():
        known = ", ".join(q.name for q in list_queries(folder))
        raise UsageError(f"no query named {name!r}", hint=f"known queries: {known}")
    path = folder / f"{name}.sql"
    return parse_header(path, path.read_text(encoding="utf-8"))


def set_params(con: duckdb.DuckDBPyConnection, query: Query, values: dict[str, str]) -> None:
    """Bind each ``-p NAME VALUE`` into the session variable the query reads; unknown names are a usage error."""
    declared = {p.name: p for p in query.params}
    for name, value in values.items():
        param = declared.get(name)
        if param is None:
            known = ", ".join(declared) or "none"
            raise UsageError(f"query {query.name} has no parameter {name!r}", hint=f"parameters: {known}")
        # name and type come from the header (checked by _PARAM and PARAM_TYPES); the value is bound
        sql = f"set variable {param.name} = cast($value as {PARAM_TYPES[param.type]})"
        if param.type == "timestamp":
            try:
                value = _utc(value)
            except ValueError as exc:
                raise InputError(f"-p {name} {value!r}: not a valid timestamp ({exc})") from exc
        try:
            con.execute(sql, {"value": value})
        except duckdb.ConversionException as exc:
            raise InputError(f"-p {name} {value!r}: not a valid {param.type}") from exc


def _utc(value: str) -> str:
    """A timestamp written with an offset or a time zone name as the UTC time it names (the store's times are UTC,
    and DuckDB's cast to timestamp drops the offset, and any word after the time: "10:00 America/New_York" and
    "10:00 XYZ" both read 10:00); any other text as given, for DuckDB to read or refuse. An unknown zone name, or one
    after a time Python cannot read, is a ValueError."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        zoned = _ZONE_SUFFIX.match(value.strip())
        if zoned is None:
            return value
        parsed = datetime.fromisoformat(zoned["time"].strip())
        if parsed.tzinfo is not None:
            raise ValueError("both an offset and a time zone name") from None
        parsed = parsed.replace(tzinfo=_zone(zoned["zone"]))
    if parsed.tzinfo is None:
        return value
    return parsed.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")


def _zone(name: str) -> tzinfo:
    try:
        return UTC if name.upper() == "Z" else ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


@contextmanager
def bound(con: duckdb.DuckDBPyConnection, query: Query, values: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Set the query's variables for the duration of the block, then reset them.

    Yields the named parameters to bind for files written with ``$name`` placeholders instead of ``getvariable``
    (internal queries of diagnose and recommend): each gets its variable's typed value, or null when unset.
    """
    declared = {p.name for p in query.params}
    try:
        set_params(con, query, values)
        yield {name: _variable(con, name) for name in dollar_params(query.sql)}
    finally:
        for name in values:
            if name in declared:  # a header name ([a-z0-9_] only), never text the user typed
                con.execute(f"reset variable {name}")


def dollar_params(sql: str) -> list[str]:
    """``$name`` placeholders in the SQL outside ``--`` comments, in order of first use."""
    code = "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
    return list(dict.fromkeys(_DOLLAR.findall(code)))


def _variable(con: duckdb.DuckDBPyConnection, name: str) -> Any:
    row = con.execute("select getvariable($name)", {"name": name}).fetchone()
    return row[0] if row else None


def run_query(
    con: duckdb.DuckDBPyConnection, query: Query, values: dict[str, str] | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run a named query and return (column names, rows)."""
    with bound(con, query, values or {}) as params:
        return _fetch(con, query.sql, params)


def query_arrow(con: duckdb.DuckDBPyConnection, query: Query, values: dict[str, str] | None = None) -> Any:
    """The same result as a pyarrow Table (keeps timestamps and lists typed, for Parquet)."""
    with bound(con, query, values or {}) as params:
        return _arrow(con, query.sql, params)


def run_sql(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Ad-hoc SQL against the store."""
    return _fetch(con, _statement(sql))


def sql_arrow(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    return _arrow(con, _statement(sql))


def _statement(sql: str) -> str:
    if not sql.strip().strip(";").strip():
        raise InputError("sql: no statement given")
    return sql


def _arrow(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None) -> Any:
    try:
        relation = con.sql(sql, params=params or None)
        if relation is None:  # a statement without a result (only comments, say): no rows, as _fetch gives
            import pyarrow as pa

            return pa.table({})
        return relation.to_arrow_table()
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"sql: {first}") from exc


def _execute(
    con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None
) -> duckdb.DuckDBPyConnection:
    """DuckDB's own error (bad SQL, a write to a read-only store) becomes one InputError line."""
    try:
        return con.execute(sql, params or None)
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"sql: {first}") from exc


def _fetch(
    con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    cursor = _execute(con, sql, params)
    if cursor is None or cursor.description is None:  # a statement without a result (only comments, say)
        return [], []
    try:  # an error in a later chunk of the result (a cast, error()) surfaces only while fetching
        rows = cursor.fetchall()
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"sql: {first}") from exc
    return [d[0] for d in cursor.description], rows


def records(columns: list[str], rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [dict(zip(columns, row, strict=True)) for row in rows]


def to_csv(columns: list[str], rows: list[tuple[Any, ...]]) -> str:
    """CSV with a header row; nulls are empty fields, lists are JSON arrays."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if v is None else dumps(v) if isinstance(v, list | dict) else v for v in row])
    return buffer.getvalue()


def to_json(columns: list[str], rows: list[tuple[Any, ...]]) -> str:
    return dumps({"rows": records(columns, rows)})


def write_parquet(table: Any, out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pq.write_table(table, out)
    except OSError as exc:
        raise InputError(f"{out}: cannot write: {exc.strerror or exc}") from exc
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:  # a column type Parquet has no form for
        raise InputError(f"{out}: cannot write Parquet: {str(exc).splitlines()[0]}") from exc
