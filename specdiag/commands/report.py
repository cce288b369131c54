"""`specdiag report`: one self-contained HTML file (and optionally PNGs) from the store."""

from __future__ import annotations

import click

from specdiag.options import db_option
from specdiag.output import emit_json, message
from specdiag.store import connect


@click.command("report")
@db_option
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, writable=True),
    default="report.html",
    show_default=True,
    help="HTML file to write (self-contained: opens offline).",
)
@click.option(
    "--png-dir",
    "png_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Also write each chart as <DIR>/<chart>.png (for tickets and chat).",
)
@click.option(
    "--json", "as_json", is_flag=True, help='Print {"written": [paths]} on stdout instead of the paths.'
)
def report(db: str | None, out: str, png_dir: str | None, as_json: bool) -> None:
    """Write an HTML report: findings, acceptance and speedup charts, recommendations, replays, data quality.

    Prints the paths written, one a line (or {"written": [...]} with --json).
    """
    from specdiag.report import write_report

    con = connect(db, read_only=True)
    try:
        written = write_report(con, out, png_dir=png_dir, progress=True)
    finally:
        con.close()
    if as_json:
        emit_json({"written": [str(p) for p in written]})
        return
    for path in written:
        click.echo(str(path))
    message(f"report written to {written[0]} (open it in any browser; it makes no network request)")
