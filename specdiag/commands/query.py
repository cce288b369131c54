"""`specdiag query NAME` (a named diagnostic from queries/) and `specdiag sql "..."` (ad-hoc, read-only)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import duckdb
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from specdiag import queries
from specdiag.errors import InputError, UsageError
from specdiag.options import db_option
from specdiag.output import message, out_console, plain
from specdiag.store import connect, resolve_db


def _format_option(func: Any) -> Any:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(queries.FORMATS),
        default="table",
        show_default=True,
        help="Output format; parquet needs --out.",
    )(func)


def _out_option(func: Any) -> Any:
    return click.option(
        "--out",
        "out",
        type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
        callback=lambda _ctx, _param, value: None if value == Path("-") else value,  # "-": stdout, as flag's
        help="Write to FILE instead of stdout (- for stdout).",
    )(func)


@click.command("query")
@click.argument("name", required=False)
@click.option(
    "-p", "--param", "params", type=(str, str), multiple=True, metavar="NAME VALUE", help="Set a parameter."
)
@click.option(
    "--list", "list_", is_flag=True, help="List the queries with their descriptions and parameters."
)
@db_option
@_format_option
@_out_option
def query(
    name: str | None,
    params: tuple[tuple[str, str], ...],
    list_: bool,
    db: str | None,
    fmt: str,
    out: Path | None,
) -> None:
    """Run the named query queries/NAME.sql against the store (parameter values are always bound)."""
    if list_:
        _list(fmt, out)
        return
    if not name:
        raise UsageError("give a query NAME or --list", hint="specdiag query --list")
    q = queries.find_query(name)
    values = dict(params)
    if len(values) < len(params):
        twice = sorted({n for n, _ in params if sum(m == n for m, _ in params) > 1})
        raise UsageError(f"-p {', '.join(twice)} given more than once", hint="give each parameter once")
    _check_out(out, db)
    con = connect(db, read_only=True)
    try:
        if fmt == "parquet":
            table = queries.query_arrow(con, q, values)
            _write_parquet(table, out)
            return
        columns, rows = queries.run_query(con, q, values)
    finally:
        con.close()
    _render(columns, rows, fmt, out, title=q.name)


@click.command("sql")
@click.argument("statement")
@db_option
@_format_option
@_out_option
def sql(statement: str, db: str | None, fmt: str, out: Path | None) -> None:
    """Run ad-hoc SQL against the store, opened read-only (the SQL reads and writes no other file)."""
    _check_out(out, db)
    con = connect(db, read_only=True)
    con.execute("set enable_external_access = false")  # no COPY TO, ATTACH or reads of other files
    # nor settings that name files: `call enable_logging(storage='file', ...)` then aborts the whole process
    # (SIGABRT in DuckDB 2.0), and profiling_output fails only while the result is read. Display settings stay free.
    try:
        con.execute("set allowed_configs = ['timezone', 'calendar']")
    except duckdb.Error:  # a DuckDB without the option: those are locked too
        pass
    con.execute("set lock_configuration = true")
    try:
        if fmt == "parquet":
            _write_parquet(queries.sql_arrow(con, statement), out)
            return
        columns, rows = queries.run_sql(con, statement)
    finally:
        con.close()
    _render(columns, rows, fmt, out, title=None)


def _check_out(out: Path | None, db: str | None) -> None:
    """--out must not name the store (or its write-ahead log): a read-only command would overwrite it."""
    if out is None:
        return
    store = resolve_db(db)
    for target in (store, store.with_name(store.name + ".wal")):
        if out.resolve() == target.resolve() or (out.exists() and target.exists() and out.samefile(target)):
            raise UsageError(
                f"--out {out} is the store {store}: it would be overwritten", hint="pass another --out"
            )


def _list(fmt: str, out: Path | None) -> None:
    if fmt == "parquet":
        raise UsageError("--list writes a table, csv or json", hint="--list --format csv --out FILE")
    if fmt == "table" and out is not None:
        raise UsageError("--out needs --format csv or json with --list")
    found = queries.list_queries()
    if fmt in ("json", "csv"):
        columns = ["name", "description", "grain", "params", "columns"]
        rows = [
            (
                q.name,
                q.description,
                q.grain,
                [{"name": p.name, "type": p.type, "default": p.default, "doc": p.doc} for p in q.params],
                list(q.columns),
            )
            for q in found
        ]
        _render(columns, rows, fmt, out, title=None)
        return
    table = Table(title="queries", show_lines=False)
    for col in ("name", "description", "parameters"):
        table.add_column(col, overflow="fold")
    for q in found:
        params = ", ".join(f"{p.name} ({p.type})" for p in q.params) or "-"
        table.add_row(plain(q.name), plain(q.description), plain(params))
    print_table(table)


def _render(
    columns: list[str], rows: list[tuple[Any, ...]], fmt: str, out: Path | None, title: str | None
) -> None:
    if fmt == "table":
        if out is not None:
            raise UsageError("--out needs --format csv, json or parquet")
        table = Table(title=title)
        for col in columns:
            table.add_column(col, overflow="fold")
        for row in rows:
            table.add_row(*(_cell(v) for v in row))
        print_table(table)
        message(f"{len(rows)} row{'s' if len(rows) != 1 else ''}")
        return
    text = queries.to_csv(columns, rows) if fmt == "csv" else queries.to_json(columns, rows) + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{out}: cannot write: {exc.strerror or exc}") from exc
        message(f"wrote {len(rows)} rows to {out}")


def _write_parquet(table: Any, out: Path | None) -> None:
    if out is None:
        raise UsageError("--format parquet needs --out FILE")
    queries.write_parquet(table, out)
    message(f"wrote {table.num_rows} rows to {out}")


def print_table(table: RenderableType) -> None:
    """A table is the data on stdout: in a terminal fit the screen, in a pipe never squeeze it to 80 columns."""
    console = out_console if out_console.is_terminal else Console(file=sys.stdout, width=1000)
    console.print(table)


def _cell(value: Any) -> Text:
    """Plain text (never rich markup: values may be prompts from logs); floats to 4 significant digits."""
    if value is None:
        return Text("")
    if isinstance(value, float):
        return Text(f"{value:.4g}")
    return plain(value)
