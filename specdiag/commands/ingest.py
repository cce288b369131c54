"""`specdiag ingest`: trace files and engine logs into the store."""

from __future__ import annotations

import click

from specdiag.ingest import IngestStats, ingest_paths
from specdiag.options import db_option, json_option
from specdiag.output import emit_json, err_console, plain

JSON_KEYS = (
    "files",
    "skipped",
    "requests",
    "steps",
    "windows",
    "rejected",
    "duplicates",
    "blank",
    "other_lines",
    "lines",
)


@click.command("ingest")
@click.argument("paths", nargs=-1, required=True)
@db_option
@click.option(
    "--format",
    "fmt",
    default="auto",
    show_default=True,
    help="auto (sniff each file), trace, or an engine format of docs/engine-formats.md (e.g. vllm-log, prometheus).",
)
@click.option("--deployment", default=None, help="Deployment name for engine logs that do not print one.")
@click.option(
    "--year", type=click.IntRange(1970, 9999), default=None, help="Year for log times printed without one."
)
@click.option(
    "--log-tz",
    "tz",
    metavar="ZONE",
    default=None,
    help="IANA time zone engine logs printed their local times in (default UTC), e.g. Europe/Berlin.",
)
@click.option(
    "--redact", is_flag=True, help="Store a keyed hash and the length instead of prompt/output text."
)
@click.option(
    "--max-rejects",
    type=click.IntRange(min=0),
    default=None,
    help="Fail (exit 1) when more than N lines are rejected; accepted lines are stored anyway.",
)
@click.option("--no-progress", is_flag=True, help="No progress bar or per-file lines on stderr.")
@json_option
def ingest(
    paths: tuple[str, ...],
    db: str | None,
    fmt: str,
    deployment: str | None,
    year: int | None,
    tz: str | None,
    redact: bool,
    max_rejects: int | None,
    no_progress: bool,
    as_json: bool,
) -> None:
    """Ingest trace files (JSON Lines, optionally gzip/zstd) and engine logs into the store.

    PATHS are files, folders (read recursively, in sorted order) or - for stdin. Every line is stored, counted as a
    duplicate or blank, or quarantined in the rejects table with its reason. A file whose content was already
    ingested is skipped. Set $SPECDIAG_REDACT_KEY to choose the --redact key.
    """
    stats = ingest_paths(
        list(paths),
        db=db,
        fmt=fmt,
        deployment=deployment,
        year=year,
        redact=redact,
        tz=tz,
        max_rejects=None,
        progress=not no_progress,
    )
    _summary(stats)
    if as_json:
        emit_json({k: getattr(stats, k) for k in JSON_KEYS})
    if max_rejects is not None and stats.rejected > max_rejects:
        from specdiag.errors import ThresholdExceeded

        raise ThresholdExceeded(
            f"{stats.rejected} lines rejected, more than --max-rejects {max_rejects} (accepted lines are stored)",
            hint="see them with `specdiag query rejects_by_reason`",
        )


def _summary(stats: IngestStats) -> None:
    """One screen on stderr: totals, then notes and skipped files (at most a few lines each)."""
    new = stats.files - stats.skipped
    err_console.print(
        f"ingested {new} file{'s' if new != 1 else ''}"
        + (f" ({stats.skipped} already ingested, skipped)" if stats.skipped else "")
        + f", {stats.lines:,} lines: {stats.requests:,} requests, "
        f"{stats.steps:,} steps, {stats.windows:,} windows; {stats.duplicates:,} duplicates, "
        f"{stats.blank:,} blank, {stats.rejected:,} rejected, {stats.other_lines:,} other lines",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    formats: dict[str, int] = {}
    for f in stats.per_file:
        if not f.skipped:
            formats[f.format] = formats.get(f.format, 0) + 1
    if formats:
        listed = ", ".join(f"{name} x{n}" for name, n in sorted(formats.items()))
        err_console.print(f"formats: {listed}", highlight=False, markup=False, soft_wrap=True)
    notes = [
        f"{folder}: no files in this folder (hidden files are skipped)" for folder in stats.empty_folders
    ]
    notes += [
        f"{f.path}: skipped, {n}" if f.skipped else f"{f.path}: {n}" for f in stats.per_file for n in f.notes
    ]
    for note in notes[:10]:
        err_console.print(plain(note), highlight=False, soft_wrap=True)
    if len(notes) > 10:
        err_console.print(f"... and {len(notes) - 10} more notes", highlight=False)
    examples = [e for f in stats.per_file for e in f.examples]
    for example in examples[:5]:
        err_console.print(plain(f"rejected {example}"), highlight=False, soft_wrap=True)
    if stats.rejected:
        err_console.print(
            "rejected lines are in the rejects table: `specdiag query rejects_by_reason`",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
