"""Trace lines -> request and step rows, columnar for clean input, line by line only where needed.

Fast path: pyarrow's JSON reader parses a whole block, first inferring types (the cheaper read), and the block is
used when every field's type fits the v1 format; otherwise against the declared v1 field types (strict: ``3.0`` is not
an int, ``true`` is not a number, a duplicate key is an error). Then polars checks required fields and ranges for all
rows at once. A block the reader refuses is cut into small pieces that are retried; a piece that still fails, and any
row the vectorised checks do not pass, goes to ``traceformat.validate_line``, which either rejects it with a reason
or normalises it. Both paths produce frames with the same schema, so rows are built the same way.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.json as pj

from specdiag.ingest_read import Block, line_bounds
from specdiag.traceformat import (
    EPOCH_MAX_S,
    FLAT_STEP_FIELDS,
    FLAT_STEP_REQUIRED,
    INT32_MAX,
    MAX_DEPTH,
    REQUEST_FIELDS,
    REQUEST_REQUIRED,
    STEP_FIELDS,
    STEP_REQUIRED,
    TS_PATTERN,
    Invalid,
    Record,
    nesting_depth,
    validate_line,
)

PIECE_LINES = 512  # lines per retry piece when the reader refuses a block
RAW_BYTES = 1024  # raw text kept in the rejects table

_ARROW = {"str": pa.string(), "int": pa.int64(), "num": pa.float64(), "bool": pa.bool_()}
_ARROW_LIST = {"ints": pa.list_(pa.int64()), "probs": pa.list_(pa.float64())}
_POLARS = {"str": pl.String, "int": pl.Int64, "num": pl.Float64, "bool": pl.Boolean}
_POLARS_LIST = {"ints": pl.List(pl.Int64), "probs": pl.List(pl.Float64)}

# Columns of the frames both paths produce (line = 1-based line number in the file).
_REQ_COLS = [n for n in REQUEST_FIELDS if n not in ("event", "ts", "steps")]
REQUEST_SCHEMA: dict[str, Any] = {
    **{n: _POLARS[REQUEST_FIELDS[n][0]] for n in _REQ_COLS},
    "ts_us": pl.Int64,
    "extra": pl.String,
    "line": pl.Int64,
}
_STEP_COLS = [n for n in STEP_FIELDS if n != "ts"]
STEP_SCHEMA: dict[str, Any] = {
    "request_id": pl.String,
    **{n: _POLARS.get(STEP_FIELDS[n][0]) or _POLARS_LIST[STEP_FIELDS[n][0]] for n in _STEP_COLS},
    "ts_us": pl.Int64,
    "extra": pl.String,
    "line": pl.Int64,
    "flat": pl.Boolean,  # a flat step line (counted as a line of its own) rather than nested in a request
}

_TOP_FIELDS = {**REQUEST_FIELDS, **FLAT_STEP_FIELDS}  # shared names have the same JSON type
_REQUEST_ONLY = [n for n in REQUEST_FIELDS if n not in FLAT_STEP_FIELDS]
_STEP_ONLY = [n for n in FLAT_STEP_FIELDS if n not in REQUEST_FIELDS]


@dataclass
class Rejected:
    line: int
    byte_offset: int
    reason: str
    detail: str
    raw: bytes


@dataclass
class BlockRows:
    requests: pl.DataFrame
    steps: pl.DataFrame  # nested steps (line = their request's line) and flat steps (line of their own)
    rejects: list[Rejected] = field(default_factory=list)
    blank: int = 0
    lines: int = 0
    blank_lines: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # their line numbers


def _arrow_schema(ts_type: pa.DataType) -> pa.Schema:
    def arrow(kind: str) -> pa.DataType:
        return _ARROW.get(kind) or _ARROW_LIST[kind]

    step_fields = [(n, ts_type if k == "ts" else arrow(k)) for n, (k, _r) in STEP_FIELDS.items()]
    top = []
    for name, (kind, _r) in _TOP_FIELDS.items():
        if kind == "ts":
            top.append((name, ts_type))
        elif kind == "steps":
            top.append((name, pa.list_(pa.struct(step_fields))))
        else:
            top.append((name, arrow(kind)))
    return pa.schema(top)


_SCHEMAS = [_arrow_schema(pa.string()), _arrow_schema(pa.float64())]
_last_schema = [_SCHEMAS[0]]


# A non-blank line that does not open an object. pyarrow's JSON reader crashes the process (SIGSEGV, pyarrow 26)
# when the first value of its input is `null`, and turns a later `null` into a row of nulls: such input never
# reaches it; the line validator gives those lines their reason (not_object).
_NOT_OBJECT_LINE = re.compile(rb"(?m)^[ \t\r]*[^{ \t\r\n]")


def _has_non_object_line(data: bytes, starts: np.ndarray | None = None) -> bool:
    """Whether a non-blank line does not start with "{" (numpy on line starts; the regex only for indented lines)."""
    arr = np.frombuffer(data, dtype=np.uint8)
    if starts is None:
        starts = np.concatenate(([0], np.flatnonzero(arr == 10) + 1))
    firsts = arr[starts[starts < len(arr)]]
    if np.isin(firsts, _INDENT).any():
        return _NOT_OBJECT_LINE.search(data) is not None
    return bool(((firsts != ord("{")) & (firsts != ord("\n"))).any())


_INDENT = np.frombuffer(b" \t\r", dtype=np.uint8)


def _read_options(data: bytes) -> pj.ReadOptions:
    """pyarrow parses in chunks of this size on its threads: the whole input when under 16 MB, at least 1 MB."""
    return pj.ReadOptions(block_size=max(1 << 20, min(len(data) + 1, 1 << 24)))


def _read_json(data: bytes, parse_options: pj.ParseOptions | None = None) -> pa.Table | None:
    """pyarrow's reader on NDJSON bytes; None when it refuses them or they nest deeper than MAX_DEPTH (the line
    validator rejects such lines; polars, which the rows go through next, crashes on nesting near 800 levels)."""
    try:
        table = pj.read_json(io.BytesIO(data), read_options=_read_options(data), parse_options=parse_options)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return table if _type_depth(table.schema) <= MAX_DEPTH else None


def _type_depth(schema: pa.Schema) -> int:
    """How deep lists and structs nest in rows of this schema, the row's own object counting 1 (as nesting_depth)."""
    deepest, todo = 1, [(f.type, 2) for f in schema]
    while todo:
        t, level = todo.pop()
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            deepest = max(deepest, level)
            todo.append((t.value_type, level + 1))
        elif pa.types.is_struct(t):
            deepest = max(deepest, level)
            todo.extend((f.type, level + 1) for f in t)
    return deepest


# pyarrow's parser overflows its stack (and crashes the process) on a line nested about 10,000 deep (pyarrow 26). A
# line needs that many opening brackets to nest that deep, so only lines with this many are measured beforehand.
_READER_SAFE_DEPTH = 2048


def _reader_safe(data: bytes, starts: np.ndarray | None) -> bool:
    """Whether no line of ``data`` nests deeper than MAX_DEPTH with more than _READER_SAFE_DEPTH opening brackets."""
    if starts is None:
        starts, _ends = line_bounds(data)
    bounds = np.append(starts, len(data))
    for i in np.flatnonzero(np.diff(bounds) > _READER_SAFE_DEPTH).tolist():
        begin, end = int(bounds[i]), int(bounds[i + 1])
        opening = data.count(b"[", begin, end) + data.count(b"{", begin, end)
        if opening > _READER_SAFE_DEPTH and nesting_depth(data[begin:end]) > MAX_DEPTH:
            return False
    return True


def _parse(data: bytes, schema: pa.Schema) -> pa.Table | None:
    return _read_json(data, pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer"))


def _as_text(t: pa.DataType) -> pa.DataType:
    """``t`` with every timestamp inside it read as text instead (lists and structs followed)."""
    if pa.types.is_timestamp(t):
        return pa.string()
    if pa.types.is_list(t):
        return pa.list_(_as_text(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _as_text(f.type)) for f in t])
    return t


def _keep_text(declared: pa.Schema, parsed: pa.Schema) -> pa.Schema | None:
    """The declared schema plus, as text, every undeclared field the reader took for a timestamp; None if none.

    pyarrow infers a timestamp from strings such as "2025-03-01", and the value would reach ``extra`` as
    "2025-03-01 00:00:00": fields outside the format are kept verbatim, so such a block is read again with them
    declared as the text they are (at top level and inside the step objects).
    """
    fields, changed = list(declared), False
    for f in parsed:
        if f.name not in declared.names and _as_text(f.type) != f.type:
            fields.append(pa.field(f.name, _as_text(f.type)))
            changed = True
    step_type = declared.field("steps").type.value_type
    parsed_steps = parsed.field("steps").type
    if pa.types.is_list(parsed_steps) and pa.types.is_struct(parsed_steps.value_type):
        children = list(step_type)
        for f in parsed_steps.value_type:
            if step_type.get_field_index(f.name) < 0 and _as_text(f.type) != f.type:
                children.append(pa.field(f.name, _as_text(f.type)))
                changed = True
        index = [f.name for f in fields].index("steps")
        fields[index] = pa.field("steps", pa.list_(pa.struct(children)))
    return pa.schema(fields) if changed else None


# JSON types the inferring reader may give a field of each kind, and the type the checks expect it as. A field of
# any other type (3.5 or 3.0 read as a double for an int field, a date-like text read as a timestamp) sends the block
# to the declared-schema reader, which is strict about it.
_INFERRED: dict[str, tuple[tuple[pa.DataType, ...], pa.DataType]] = {
    "str": ((pa.string(),), pa.string()),
    "int": ((pa.int64(),), pa.int64()),
    "num": ((pa.int64(), pa.float64()), pa.float64()),
    "bool": ((pa.bool_(),), pa.bool_()),
    "ints": ((pa.list_(pa.int64()), pa.list_(pa.null())), pa.list_(pa.int64())),
    "probs": ((pa.list_(pa.float64()), pa.list_(pa.int64()), pa.list_(pa.null())), pa.list_(pa.float64())),
}


def _expected(kind: str, t: pa.DataType) -> pa.DataType | None:
    """The type a field of ``kind`` read as ``t`` is checked as; None when ``t`` does not fit the kind."""
    if kind == "ts":  # text or epoch seconds; a timestamp the reader inferred has lost its text
        return t if t == pa.string() else pa.float64() if t in (pa.int64(), pa.float64()) else None
    allowed, target = _INFERRED[kind]
    return target if t in allowed or t == pa.null() else None


def _conform(table: pa.Table) -> pa.Table | None:
    """A table the reader parsed with inferred types, cast to the types the checks expect; None if it does not fit.

    Inference costs less than a declared schema with many absent fields and is as strict about JSON itself (a
    repeated key, a field changing type); what it cannot tell apart (3 from 3.0, a date from its text) sends the
    block to the declared-schema reader.
    """
    columns: dict[str, pa.ChunkedArray] = {}
    for name, column in zip(table.column_names, table.columns):
        t = column.type
        if name == "steps":
            if t == pa.null() or t == pa.list_(pa.null()):  # no step objects in the block: nulls, empty lists
                columns[name] = column.cast(_SCHEMAS[0].field("steps").type)
                continue
            if not (pa.types.is_list(t) and pa.types.is_struct(t.value_type)):
                return None
            children = []
            for f in t.value_type:
                if f.name in STEP_FIELDS:
                    want = _expected(STEP_FIELDS[f.name][0], f.type)
                else:  # an extra field of the step: kept as read, unless it was a date-like text
                    want = f.type if _as_text(f.type) == f.type else None
                if want is None:
                    return None
                children.append(pa.field(f.name, want))
            if any(r not in t.value_type.names for r in STEP_REQUIRED):
                return None
            columns[name] = column.cast(pa.list_(pa.struct(children)))
        elif name in _TOP_FIELDS:
            want = _expected(_TOP_FIELDS[name][0], t)
            if want is None:
                return None
            columns[name] = column if want == t else column.cast(want)
        elif _as_text(t) != t:  # an extra field with a date-like text: the declared reader keeps it as text
            return None
        else:
            columns[name] = column
    n = table.num_rows
    for name, (
        kind,
        _r,
    ) in _TOP_FIELDS.items():  # absent fields as typed nulls, as the declared reader gives them
        if name not in columns and kind != "steps":
            columns[name] = pa.chunked_array(
                [pa.nulls(n, pa.string() if kind == "ts" else _INFERRED[kind][1])]
            )
    if "steps" not in columns:
        columns["steps"] = pa.chunked_array([pa.nulls(n, _SCHEMAS[0].field("steps").type)])
    return pa.table(columns)


def _read_inferred(data: bytes) -> pa.Table | None:
    table = _read_json(data)
    return None if table is None else _conform(table)


# An integer literal of 19 or more digits may not fit int64; pyarrow then reads it as a double and loses digits.
_LONG_INT = re.compile(rb"[:,\[]\s*-?\d{19}")


def _has_float(t: pa.DataType) -> bool:
    if pa.types.is_floating(t):
        return True
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _has_float(t.value_type)
    return pa.types.is_struct(t) and any(_has_float(f.type) for f in t)


def _lossy_extra(table: pa.Table, data: bytes) -> bool:
    """Whether a field outside the format (kept as written in ``extra``) may hold an integer read as a double, or
    has an empty name."""
    steps = table.schema.field("steps").type.value_type if "steps" in table.column_names else pa.struct([])
    floats = [f.type for f in table.schema if f.name not in _TOP_FIELDS] + [
        f.type for f in steps if f.name not in STEP_FIELDS
    ]
    if "" in table.column_names:  # polars renames a column without a name (an empty key) to column_<i>
        return True
    return any(_has_float(t) for t in floats) and _LONG_INT.search(data) is not None


def _read_arrow(data: bytes, starts: np.ndarray | None = None) -> pa.Table | None:
    """Parse NDJSON bytes with each ts variant (text or epoch seconds); None when the reader refuses them, or when an
    extra field may hold an integer past int64 (the line validator keeps it exact).

    The variant that worked last is tried first: a file uses one kind of timestamp throughout, as a rule.
    """
    if _has_non_object_line(data, starts) or not _reader_safe(data, starts):
        return None
    inferred = _read_inferred(data)
    if inferred is not None:
        return None if _lossy_extra(inferred, data) else inferred
    for schema in sorted(_SCHEMAS, key=lambda s: s is not _last_schema[0]):
        table = _parse(data, schema)
        if table is None:
            continue
        text_schema = _keep_text(schema, table.schema)
        if text_schema is not None:
            table = _parse(data, text_schema)
            if table is None:
                continue
        _last_schema[0] = schema
        return None if _lossy_extra(table, data) else table
    return None


def ts_us(col: str, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
    """(microseconds since epoch, fast-path validity) for a ts column of text or epoch seconds.

    Mirrors ``traceformat.parse_ts``; a row it cannot vouch for is invalid here and goes to the line validator.
    """
    c = pl.col(col)
    if dtype.is_numeric():
        # 9e9 s keeps seconds * 1e6 exact in a double, so the rounding matches Python's round()
        ok = c.is_null() | ((c >= 0) & (c < min(9e9, EPOCH_MAX_S)))
        # only in-range values are converted: one past int64 microseconds (epoch micro- or nanoseconds logged by
        # mistake) would fail the cast for the whole block; such a row goes to the validator (bad_timestamp)
        return pl.when(ok).then((c * 1e6).round()).cast(pl.Int64), ok
    if dtype == pl.Null:
        return pl.lit(None, pl.Int64), pl.lit(True)
    text = c.cast(pl.String)
    norm = pl.concat_str(text.str.slice(0, 10), pl.lit("T"), text.str.slice(11)).str.replace(r"z$", "Z")
    norm = pl.when(norm.str.contains(r"(Z|[+-]\d\d:\d\d)$")).then(norm).otherwise(norm + "Z")
    parsed = norm.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%#z", strict=False, time_zone="UTC").dt.epoch("us")
    ok = c.is_null() | (text.str.contains(TS_PATTERN) & parsed.is_not_null())
    return parsed, ok


def _range_ok(name: str, kind: str, rng: tuple[float, float, bool] | None) -> pl.Expr:
    c = pl.col(name)
    if rng is None:
        return pl.lit(True)
    low, high, low_open = rng
    if kind in ("ints", "probs"):
        inner = pl.element()
        cond = (inner > low if low_open else inner >= low) & (inner <= high) & inner.is_not_null()
        return c.is_null() | c.list.eval(cond.cast(pl.Int8)).list.min().fill_null(1).cast(pl.Boolean)
    lower = c > low if low_open else c >= low
    return c.is_null() | (lower & (c <= high) & c.is_finite() if kind == "num" else lower & (c <= high))


def _extra_json(df: pl.DataFrame, known: set[str]) -> pl.Expr:
    """JSON object text of the non-null columns outside ``known``, or null."""
    cols = [c for c in df.columns if c not in known]
    if not cols:
        return pl.lit(None, pl.String)
    pieces = [
        pl.when(pl.col(c).is_not_null()).then(
            pl.struct(c).struct.json_encode().str.slice(1).str.strip_suffix("}")
        )
        for c in cols
    ]
    body = pl.concat_list(pieces).list.drop_nulls().list.join(",")
    return pl.when(body != "").then("{" + body + "}").otherwise(None)


def _inexact(e: pl.Expr, dtype: Any) -> pl.Expr | None:
    """Where the JSON ``_extra_json`` writes for a value of ``dtype`` may differ from the value as written (None:
    nowhere): a whole number in a float column (an integer the reader widened because another line had a
    fraction: 3 would become 3.0, and digits past 2**53 would be lost), an infinity, and an object with a null member (the
    reader gives each object every key seen in the block, so a key the line did not have reads as null)."""
    if dtype.is_float():  # an infinity (1e400 as written) is a reject, which the validator gives
        return (e.is_finite() & (e == e.floor())) | e.is_infinite()
    if isinstance(dtype, pl.List):
        inner = _inexact(pl.element(), dtype.inner)
        return None if inner is None else e.list.eval(inner).list.any()
    if isinstance(dtype, pl.Struct):
        parts: list[pl.Expr] = []
        for f in dtype.fields:
            member = e.struct.field(f.name)
            sub = _inexact(member, f.dtype)
            parts.append(member.is_null() if sub is None else member.is_null() | sub)
        return pl.when(e.is_not_null()).then(pl.any_horizontal(parts)) if parts else None
    return None


def _extra_exact(df: pl.DataFrame, known: set[str]) -> pl.Expr:
    """Rows whose extra fields ``_extra_json`` writes as written; the others go to the line validator."""
    bad = [x for c in df.columns if c not in known if (x := _inexact(pl.col(c), df.schema[c])) is not None]
    return ~pl.any_horizontal(bad).fill_null(False) if bad else pl.lit(True)


def _non_null(df: pl.DataFrame) -> set[str]:
    """Columns with at least one value: checks on the others are skipped (null passes every range check)."""
    return {c for c in df.columns if df[c].null_count() < len(df)}


def _fields_ok(fields: dict[str, tuple[str, Any]], required: tuple[str, ...], present: set[str]) -> pl.Expr:
    if any(name not in present for name in required):
        return pl.lit(False)  # a required column with no value at all: every row goes to the validator
    ok = pl.lit(True)
    for name in required:
        ok = ok & pl.col(name).is_not_null()
    for name in ("request_id", "deployment"):
        if name in fields and name in present:
            ok = ok & (pl.col(name).is_null() | (pl.col(name) != ""))
    for name, (kind, rng) in fields.items():
        if name in present and kind not in ("ts", "steps", "str", "bool"):
            ok = ok & _range_ok(name, kind, rng)
    if "accepted" in present and "drafted" in present:
        ok = ok & (
            pl.col("accepted").is_null()
            | pl.col("drafted").is_null()
            | (pl.col("accepted") <= pl.col("drafted"))
        )
    return ok


def _fast(table: pa.Table, lines: np.ndarray) -> tuple[pl.DataFrame, pl.DataFrame, np.ndarray]:
    """Rows from a parsed table; returns (requests, steps, mask of rows that need the line validator)."""
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    df = df.with_columns(
        pl.Series("line", lines, pl.Int64), pl.int_range(pl.len(), dtype=pl.Int64).alias("_row")
    )
    present = _non_null(df)
    event = pl.col("event").fill_null("request") if "event" in present else pl.lit("request")
    is_req, is_step = event == "request", event == "step"

    ts_val, ts_ok = (
        ts_us("ts", df.schema["ts"]) if "ts" in present else (pl.lit(None, pl.Int64), pl.lit(True))
    )
    df = df.with_columns(ts_val.alias("ts_us"), ts_ok.alias("_ts_ok"))

    known_top = set(_TOP_FIELDS) | {"line", "_row", "ts_us", "_ts_ok"}
    no_step_only = pl.all_horizontal(
        [pl.col(n).is_null() for n in _STEP_ONLY if n in present] or [pl.lit(True)]
    )
    no_req_only = pl.all_horizontal(
        [pl.col(n).is_null() for n in _REQUEST_ONLY if n in present] or [pl.lit(True)]
    )
    req_ok = is_req & _fields_ok(REQUEST_FIELDS, REQUEST_REQUIRED, present) & no_step_only
    step_ok = is_step & _fields_ok(FLAT_STEP_FIELDS, FLAT_STEP_REQUIRED, present) & no_req_only
    df = df.with_columns(
        ((req_ok | step_ok) & pl.col("_ts_ok") & _extra_exact(df, known_top)).fill_null(False).alias("_ok"),
        _extra_json(df, known_top).alias("extra"),
    )

    # nested steps: one row per step, checked the same way; a bad step (or a repeated index) marks its request
    nested = (
        df.select("request_id", "line", "_row", "steps", is_req.alias("_req"))
        .filter(pl.col("_req") & pl.col("steps").is_not_null() & (pl.col("steps").list.len() > 0))
        .drop("_req")
        .explode("steps")
    )
    if isinstance(nested.schema["steps"], pl.Struct) and len(nested):
        nested = nested.with_columns(pl.col("steps").is_null().alias("_null_step")).unnest("steps")
        sp = _non_null(nested)
        s_ts, s_ts_ok = (
            ts_us("ts", nested.schema["ts"]) if "ts" in sp else (pl.lit(None, pl.Int64), pl.lit(True))
        )
        known_step = set(STEP_FIELDS) | {"request_id", "line", "_row", "_null_step"}
        nested = nested.with_columns(
            s_ts.alias("ts_us"),
            (
                _fields_ok(STEP_FIELDS, STEP_REQUIRED, sp)
                & s_ts_ok
                & ~pl.col("_null_step")
                & _extra_exact(nested, known_step)
            )
            .fill_null(False)
            .alias("_ok"),
            _extra_json(nested, known_step).alias("extra"),
        )
        # a repeated step index within a request; rows with an out-of-range step are bad already
        key = pl.col("_row") * (INT32_MAX + 1) + pl.col("step").clip(0, INT32_MAX)
        bad_nested = nested.filter(~pl.col("_ok") | key.is_duplicated())["_row"]
        df = df.with_columns(
            (pl.col("_ok") & ~pl.col("_row").is_in(bad_nested.unique().implode())).alias("_ok")
        )
    else:
        nested = pl.DataFrame(schema={**STEP_SCHEMA, "_row": pl.Int64})

    kinds = df.select(
        "_row", "_ok", is_req.fill_null(False).alias("_req"), is_step.fill_null(False).alias("_step")
    )
    bad_rows = kinds.filter(~pl.col("_ok"))["_row"]
    # select the output columns first, then filter: the nested steps column is never copied
    requests = df.select(_select(REQUEST_SCHEMA, df)).filter(kinds["_ok"] & kinds["_req"])
    flat = df.select(_select(STEP_SCHEMA, df, flat=True))
    flat = flat.filter(kinds["_ok"] & kinds["_step"])
    if len(bad_rows):
        nested = nested.filter(~pl.col("_row").is_in(bad_rows.implode()))
    nested = nested.with_columns(pl.lit(False).alias("flat"))
    steps = pl.concat([nested.select(_select(STEP_SCHEMA, nested)), flat])
    need = np.zeros(len(df), dtype=bool)
    need[bad_rows.to_numpy()] = True
    return requests, steps, need


def _select(schema: dict[str, Any], df: pl.DataFrame, flat: bool = False) -> list[pl.Expr]:
    """Expressions giving ``schema``'s columns from ``df`` (absent ones null); ``flat`` sets the flat column."""
    return [
        (pl.lit(flat) if n == "flat" and flat else pl.col(n) if n in df.columns else pl.lit(None))
        .cast(t, strict=True)
        .alias(n)
        for n, t in schema.items()
    ]


def _from_records(records: list[tuple[int, Record]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    reqs: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    for line, rec in records:
        if rec.event == "request":
            reqs.append({**rec.fields, "line": line})
            rid = rec.fields["request_id"]
            steps.extend({**s, "request_id": rid, "line": line, "flat": False} for s in rec.steps)
        else:
            steps.append({**rec.fields, "line": line, "flat": True})
    req_df = (
        pl.DataFrame(reqs, schema=REQUEST_SCHEMA, strict=False)
        if reqs
        else pl.DataFrame(schema=REQUEST_SCHEMA)
    )
    step_df = (
        pl.DataFrame(steps, schema=STEP_SCHEMA, strict=False) if steps else pl.DataFrame(schema=STEP_SCHEMA)
    )
    return req_df, step_df


def _is_blank(raw: bytes) -> bool:
    return not raw.strip(b" \t\r")


def read_whole(block: Block) -> pa.Table | None:
    """pyarrow's strict parse of a whole block (the common case: a clean file), or None when it refuses it."""
    try:
        block.data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return _read_arrow(block.data, block.starts)


def _parse_piece(
    block: Block,
    idx: np.ndarray,
    out: list[Any],
    slow: list[int],
    whole: bool = False,
    table: pa.Table | None = None,
) -> None:
    """Parse the non-blank lines ``idx`` of ``block`` fast; lines that need the validator are added to ``slow``.

    ``whole``: idx holds every non-blank line of the block, so the reader can take the block as it is (it skips
    blank lines exactly as ``_is_blank`` defines them; ``table`` is its parse when done already); a piece is
    copied out line by line.
    """
    if len(idx) == 0:
        return
    if whole:
        if table is None:
            table = read_whole(block)
    else:
        data = b"\n".join(block.data[s:e] for s, e in zip(block.starts[idx], block.ends[idx]))
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            table = None
        else:
            table = _read_arrow(data)
    if table is not None and table.num_rows == len(idx):
        lines = block.first_line + idx
        requests, steps, need = _fast(table, lines)
        out.append((requests, steps))
        slow.extend(idx[need].tolist())
    elif len(idx) > PIECE_LINES:
        for k in range(0, len(idx), PIECE_LINES):
            _parse_piece(block, idx[k : k + PIECE_LINES], out, slow)
    else:
        slow.extend(idx.tolist())


def parse_block(block: Block, table: pa.Table | None = None) -> BlockRows:
    """All lines of a block: rows for valid lines, a reject for each invalid one, blank lines counted.

    ``table``: ``read_whole(block)`` when the caller parsed it already (in another thread).
    """
    lengths = block.ends - block.starts
    # a blank line holds only spaces, tabs or a carriage return; test the short ones only
    short = np.flatnonzero(lengths <= 8)
    blank_idx = [i for i in short.tolist() if _is_blank(block.line(i))]
    nonblank = np.setdiff1d(
        np.arange(block.n_lines), np.asarray(blank_idx, dtype=np.int64), assume_unique=True
    )
    parts: list[Any] = []
    slow: list[int] = []
    _parse_piece(block, nonblank, parts, slow, whole=True, table=table)
    rejects: list[Rejected] = []
    records: list[tuple[int, Record]] = []
    for i in sorted(slow):
        raw = block.line(i)
        result = validate_line(raw)
        line = block.first_line + i
        if isinstance(result, Invalid):
            offset = block.byte_offset + int(block.starts[i])
            rejects.append(Rejected(line, offset, result.reason, result.detail, raw[:RAW_BYTES]))
        else:
            records.append((line, result))
    if records:
        parts.append(_from_records(records))
    if len(parts) == 1:  # the whole block took the fast path: rows are in line order already
        requests, steps = parts[0]
    elif parts:
        requests = pl.concat([p[0] for p in parts]).sort("line")
        steps = pl.concat([p[1] for p in parts]).sort("line", "step")
    else:
        requests, steps = pl.DataFrame(schema=REQUEST_SCHEMA), pl.DataFrame(schema=STEP_SCHEMA)
    blank_lines = block.first_line + np.asarray(blank_idx, dtype=np.int64)
    return BlockRows(requests, steps, rejects, len(blank_idx), block.n_lines, blank_lines)
