"""The report: one self-contained HTML file (and optionally one PNG per chart) from what the store holds.

``write_report(con, out, png_dir=None) -> list[Path]`` reads the store (requests, steps, windows, rejects,
findings, replay results), asks ``specdiag.recommend`` for the speedup-versus-tau curves, and writes the page.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import altair as alt
import duckdb
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from specdiag import __version__
from specdiag.errors import InputError
from specdiag.output import err_console
from specdiag.report import charts, data
from specdiag.report.recommendations import recommendations

# vega-lite version of altair's schema, e.g. "v6.4.1" -> "6.4": the bundle must match the specs altair writes.
VL_VERSION = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])


def build(
    con: duckdb.DuckDBPyConnection, step: Callable[[str], None] = lambda _: None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Everything the page shows: (template context, [{id, title, spec}]). Charts with no data are left out and
    listed in context["missing_charts"]. ``step(description)`` is called before each stage (progress display)."""
    step("reading the store")
    bucket_s = data.bucket_seconds(con)
    scope = data.chart_scope(con)
    # stage times and quality come from request records only: engine-only deployments would crowd them out
    request_scope = data.chart_scope(con, windows=False)
    found = data.findings(con)
    acceptance = data.acceptance_over_time(con, bucket_s, scope)
    positions = data.position_acceptance(con, scope)
    stages = data.stage_time_by_batch(con, request_scope)
    quality = data.quality_over_time(con, bucket_s, request_scope)
    step("recommending tau (bootstrap)")
    recs, skipped = recommendations(con)
    step("building charts")
    drawn = scope.drawn if scope.other is not None else None
    all_markers = len(data.timeline_markers(found))
    markers = data.timeline_markers(found, drawn, data.MAX_MARKERS)
    charted = data.busiest_recommendations(recs, data.MAX_DEPLOYMENTS)
    curves = [dict(point, label=r["label"]) for r in charted for point in r["curve"]]
    notes = _chart_notes(scope, request_scope, len(recs) - len(charted), all_markers, len(markers))
    built = {
        "acceptance": ("Acceptance over time", charts.acceptance_over_time(acceptance, markers)),
        "positions": ("Per-position acceptance", charts.position_acceptance(positions)),
        "speedup": ("Speedup versus tau", charts.speedup_vs_tau(curves, data.speedup_markers(charted))),
        "stages": ("Draft versus verify time", charts.stage_time(stages)),
        "quality": ("Quality and shadow match", charts.quality_over_time(quality)),
    }
    chart_list = [
        {"id": key, "title": title, "spec": chart.to_dict()} for key, (title, chart) in built.items() if chart
    ]
    context = {
        "version": __version__,
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "bucket_minutes": bucket_s // 60,
        "summary": data.ingest_summary(con),
        "findings": found[: data.MAX_FINDINGS],
        "findings_note": _findings_note(found),
        "chart_notes": notes,
        "recommendations": recs,
        "skipped_recommendations": skipped,
        "rejects": data.rejects_by_reason(con),
        "replays": data.replayed(con),
        "missing_charts": [title for title, chart in built.values() if chart is None],
    }
    return context, chart_list


def _chart_notes(
    scope: data.ChartScope,
    request_scope: data.ChartScope,
    uncharted_recs: int,
    all_markers: int,
    markers: int,
) -> list[str]:
    """What the charts aggregate or leave out, in words for the page (empty when they show everything)."""
    notes = []
    same = request_scope == scope
    for which, s, records in (
        ("Acceptance, per-position, stage-time and quality charts" if same else "Acceptance and per-position charts",
         scope, ""),
        (None if same else "Stage-time and quality charts", request_scope, " (by their request records)"),
    ):  # fmt: skip
        if which is not None and s.other is not None:
            notes.append(
                f"{which} draw the {len(s.drawn)} deployments with the most drafted tokens{records} one by one; "
                f"the other {s.pooled} ({100 * s.pooled_drafted:.1f}% of drafted tokens) are pooled into one "
                f'series, "{s.other}", whose rates and times come from their summed counts.'
            )
    if uncharted_recs:
        notes.append(
            f"Speedup versus tau shows the curves of the {data.MAX_DEPLOYMENTS} recommendations that rest on the "
            f"most verify steps; the other {uncharted_recs} are in the Recommendations table (curves cannot be "
            "pooled)."
        )
    if markers < all_markers:
        where = " of the deployments drawn" if scope.other is not None else ""
        notes.append(
            f"Acceptance over time marks {markers} of {all_markers:,} findings and configuration changes (the most "
            f"severe findings{where}); the Findings section lists them, most severe first."
        )
    return notes


def _findings_note(found: list[dict[str, Any]]) -> str | None:
    """The findings table's note when it lists only the most severe (None when it lists them all)."""
    if len(found) <= data.MAX_FINDINGS:
        return None
    by_severity: dict[str, int] = {}
    for f in found:
        by_severity[str(f["severity"])] = by_severity.get(str(f["severity"]), 0) + 1
    counts = ", ".join(f"{n:,} {sev}" for sev, n in by_severity.items())
    return (
        f"The {data.MAX_FINDINGS} most severe of {len(found):,} findings ({counts}) are listed. The store's "
        "findings table keeps them all, and specdiag flag --finding N takes any of their numbers."
    )


def write_report(
    con: duckdb.DuckDBPyConnection, out: str | Path, png_dir: str | Path | None = None, progress: bool = False
) -> list[Path]:
    """Write the HTML report to ``out`` (and ``<png_dir>/<chart>.png`` per chart); return the paths written.

    progress: show a rich progress bar on stderr (one tick per stage).
    """
    from specdiag.report.html import render

    out = Path(out)
    if not out.parent.is_dir():
        raise InputError(f"{out}: folder {out.parent} does not exist")
    if out.is_dir():
        raise InputError(f"{out}: is a folder; --out takes the HTML file to write")
    if png_dir is not None and Path(png_dir).exists() and not Path(png_dir).is_dir():
        raise InputError(f"{png_dir}: exists and is not a folder")
    with Progress(
        TextColumn("report: {task.description}"), BarColumn(), TimeElapsedColumn(),
        console=err_console, disable=not progress, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("", total=4 + (png_dir is not None))

        def step(description: str) -> None:
            if bar.tasks[0].description:
                bar.advance(task)
            bar.update(task, description=description)

        context, chart_list = build(con, step)
        step("rendering HTML")
        out.write_text(render(context, chart_list, VL_VERSION), encoding="utf-8")
        written = [out]
        if png_dir is not None:
            step("writing PNGs")
            written += write_pngs(chart_list, Path(png_dir))
        bar.advance(task)
    return written


def write_pngs(chart_list: list[dict[str, Any]], png_dir: Path) -> list[Path]:
    """One PNG per chart, rendered offline by vl-convert (scale 2 for legible text in tickets and chat)."""
    import vl_convert

    png_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for chart in chart_list:
        path = png_dir / f"{chart['id']}.png"
        path.write_bytes(vl_convert.vegalite_to_png(chart["spec"], vl_version=VL_VERSION, scale=2))
        paths.append(path)
    return paths
