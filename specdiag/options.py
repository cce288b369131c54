"""Option bundles shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

F = Callable[..., Any]


def db_option(func: F) -> F:
    return click.option(
        "--db",
        "db",
        type=click.Path(dir_okay=False),
        default=None,
        envvar="SPECDIAG_DB",
        show_envvar=True,
        help="DuckDB database file (default ./specdiag.duckdb).",
    )(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout instead of a table.")(
        func
    )


def by_option(func: F) -> F:
    return click.option(
        "--by",
        "by",
        default="",
        help="Comma-separated segment columns, e.g. task,temperature.",
        callback=lambda _ctx, _param, value: [v.strip() for v in value.split(",") if v.strip()],
    )(func)
