"""`specdiag summary`: acceptance per deployment and source."""

from __future__ import annotations

import click
from rich.table import Table

from specdiag.commands.query import print_table
from specdiag.options import by_option, db_option, json_option
from specdiag.output import emit_json, message, plain
from specdiag.store import connect
from specdiag.summary import KEYS, check_by, summarize


@click.command("summary")
@db_option
@by_option
@json_option
def summary(db: str | None, by: list[str], as_json: bool) -> None:
    """Requests, verify steps, acceptance rate, MAL and alpha per deployment and source (trace or engine)."""
    columns = check_by(by)  # before opening the store: a bad --by is a usage error either way
    con = connect(db, read_only=True)
    try:
        rows = summarize(con, columns)
    finally:
        con.close()
    if as_json:
        emit_json({"rows": rows})
        return
    if not rows:
        message("the store is empty: run `specdiag ingest` first")
        return
    table = Table(title="specdiag summary")
    headers = ["deployment", "source", *columns, *KEYS[2:]]
    for name in headers:
        table.add_column(name, justify="left" if name in ("deployment", "source", *columns) else "right")
    for row in rows:
        table.add_row(*(plain(_fmt(row[name])) for name in headers))
    print_table(table)


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1e6 else f"{value:.4g}"
    return str(value)
