"""`specdiag diagnose` and `specdiag flag`: thin wrappers over specdiag.diagnose."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from specdiag.errors import InputError, UsageError
from specdiag.options import db_option, json_option
from specdiag.output import dumps, emit_json, message, out_console, plain

Window = tuple[datetime, datetime]


def parse_range(text: str | None, option: str) -> Window | None:
    """'START..END' with ISO 8601 times (UTC) -> (start, end)."""
    if text is None:
        return None
    start, sep, end = text.partition("..")
    if not sep:
        raise UsageError(f"{option} {text!r}: expected START..END, e.g. 2025-03-01T00:00..2025-03-02T00:00")
    try:
        lo, hi = datetime.fromisoformat(start.strip()), datetime.fromisoformat(end.strip())
    except ValueError as exc:
        raise UsageError(f"{option} {text!r}: {exc}") from exc
    # aware times are converted to UTC; naive ones are taken as UTC already
    lo, hi = (t if t.tzinfo is None else t.astimezone(UTC).replace(tzinfo=None) for t in (lo, hi))
    if hi <= lo:
        raise UsageError(f"{option} {text!r}: END must be after START")
    return lo, hi


@click.command("diagnose")
@db_option
@click.option("--baseline", help="Baseline time range START..END (UTC, ISO 8601); requires --window.")
@click.option(
    "--window", help="Time range START..END compared against --baseline (default: a detected change point)."
)
@json_option
def diagnose(db: str | None, baseline: str | None, window: str | None, as_json: bool) -> None:
    """Find acceptance regressions, fast-but-wrong output, bottlenecks and mis-set tau.

    Findings are ranked by severity and saved, numbered 1..N, for `specdiag flag --finding N`.
    """
    from specdiag.diagnose import diagnose as run_diagnose
    from specdiag.diagnose import save_findings
    from specdiag.store import connect

    base, win = parse_range(baseline, "--baseline"), parse_range(window, "--window")
    connect(db, read_only=True).close()  # a missing store is an error (ingest first), not a new empty one
    con = connect(db)
    findings = save_findings(con, run_diagnose(con, baseline=base, window=win))
    if as_json:
        emit_json({"findings": [f.to_dict() for f in findings]})
        return
    if not findings:
        message("no findings")
        return
    from rich.table import Table

    table = Table(title=f"{len(findings)} findings")
    for col in ("#", "severity", "kind", "deployment", "segment"):
        table.add_column(col, no_wrap=True)
    table.add_column("summary", overflow="fold")
    for f in findings:
        seg = ", ".join(f"{k}={v}" for k, v in f.segment.items()) or "-"
        table.add_row(
            str(f.finding_id), f.severity, f.kind, plain(f.deployment or "-"), plain(seg), plain(f.summary)
        )
    out_console.print(table)


@click.command("flag")
@db_option
@click.option("--finding", "finding_id", type=int, help="Finding number from the last `specdiag diagnose`.")
@click.option("--kind", help="Every saved finding of this kind.")
@click.option(
    "-n", "n", type=click.IntRange(min=1), default=8, show_default=True, help="Requests per finding."
)
@click.option(
    "--out", "out", required=True, help="Prompt records (JSON lines) for `specdiag replay`; '-' for stdout."
)
def flag(db: str | None, finding_id: int | None, kind: str | None, n: int, out: str) -> None:
    """Write representative requests of a finding (worst and typical cases) as prompt records for replay."""
    from specdiag.diagnose import flag as run_flag
    from specdiag.store import connect

    con = connect(db, read_only=True)
    records = run_flag(con, finding_id=finding_id, kind=kind, n=n)
    text = "".join(dumps(r) + "\n" for r in records)
    if out == "-":
        click.echo(text, nl=False)
    else:
        try:
            Path(out).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{out}: cannot write: {exc.strerror}") from exc
    missing = sum(r["prompt"] is None for r in records)
    message(
        f"{len(records)} prompt records written to {out}"
        + (f" ({missing} without prompt text)" if missing else "")
    )
