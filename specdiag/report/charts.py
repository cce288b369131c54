"""Altair chart builders for the report. Each takes the rows from ``specdiag.report.data`` and returns a chart, or
None when there is nothing to draw. Data are inlined in the spec (the report makes no network request)."""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any

import altair as alt

from specdiag.report.data import Row

WIDTH = 640
COND_TITLE = "P(token i accepted | 1..i-1 accepted)"
UTC = alt.Scale(type="utc")  # the store is UTC; show UTC whatever the reader's time zone


def _values(data: list[Row]) -> alt.Data:
    """Inline rows; timestamps become ISO 8601 with an explicit Z so every browser reads them as UTC."""

    def cell(v: Any) -> Any:
        if isinstance(v, float) and math.isfinite(v):
            # 12 significant digits: DuckDB's parallel float sums vary in the last bits from run to run, and the
            # same store must give the same chart data (tooltips show 3 decimals)
            return float(f"{v:.12g}")
        if isinstance(v, datetime):
            return v.isoformat() + ("Z" if v.tzinfo is None else "")
        if isinstance(v, date):
            return v.isoformat()
        return v

    # replay rows carry their token list under "tokens"; the stage rows' "tokens" is a count the tooltip shows
    return alt.Data(
        values=[
            {k: cell(v) for k, v in r.items() if not (k == "tokens" and isinstance(v, list))} for r in data
        ]
    )


def acceptance_over_time(acceptance: list[Row], markers: list[Row]) -> alt.TopLevelMixin | None:
    """Acceptance rate per deployment over time; findings with a start time are vertical rules labelled #id kind."""
    if not acceptance:
        return None
    x = alt.X("ts:T", title="time (UTC)", scale=UTC)
    lines = (
        alt.Chart(_values(acceptance))
        .mark_line(point=alt.OverlayMarkDef(size=12))
        .encode(
            x=x,
            y=alt.Y(
                "acceptance_rate:Q",
                title="acceptance_rate (accepted / drafted)",
                scale=alt.Scale(domain=[0, 1]),
            ),
            color=alt.Color("deployment:N"),
            tooltip=[
                alt.Tooltip("ts:T", title="bucket start (UTC)", format="%Y-%m-%d %H:%M", formatType="utc"),
                "deployment:N",
                alt.Tooltip("acceptance_rate:Q", format=".3f"),
                alt.Tooltip("mean_acceptance_length:Q", format=".2f"),
                "drafted:Q",
            ],
        )
    )
    layers: list[Any] = [lines]
    for what, colour, dash in (("finding", "#b91c1c", [4, 3]), ("config change", "#7c3aed", [1, 2])):
        subset = [m for m in markers if m["what"] == what]
        if not subset:
            continue
        rules = (
            alt.Chart(_values(subset))
            .mark_rule(strokeDash=dash, color=colour, strokeWidth=1.5)
            .encode(x=alt.X("since:T", scale=UTC), tooltip=["what:N", "label:N", "deployment:N", "summary:N"])
        )
        text = (
            alt.Chart(_values(subset))
            .mark_text(align="left", dx=3, dy=-4, color=colour, fontSize=10, limit=230)
            .encode(
                x=alt.X("since:T", scale=UTC),
                y=alt.Y("lane:O", axis=None, scale=alt.Scale(domain=[0, 1, 2, 3], range=[8, 56])),
                text="label:N",
            )
        )
        layers += [rules, text]
    return (
        alt.layer(*layers)
        .resolve_scale(y="independent")  # the label lanes have their own (hidden) axis
        .properties(
            width=WIDTH,
            height=260,
            title="Acceptance over time (red dashed: findings; purple dotted: configuration changes)",
        )
    )


def position_acceptance(positions: list[Row]) -> alt.TopLevelMixin | None:
    """Conditional acceptance per draft position with its 95% Wilson interval."""
    if not positions:
        return None
    base = alt.Chart(_values(positions)).encode(
        x=alt.X("position:O", title="draft position i", axis=alt.Axis(labelAngle=0)),
        color=alt.Color("deployment:N"),
    )
    points = base.mark_line(point=True).encode(
        y=alt.Y(
            "cond_alpha:Q",
            title=COND_TITLE,
            scale=alt.Scale(domain=[0, 1]),
        ),
        tooltip=[
            "deployment:N",
            "position:O",
            alt.Tooltip("cond_alpha:Q", format=".3f"),
            alt.Tooltip("ci_low:Q", format=".3f"),
            alt.Tooltip("ci_high:Q", format=".3f"),
            alt.Tooltip("eligible:Q", format=",.0f"),
        ],
    )
    bars = base.mark_errorbar().encode(y=alt.Y("ci_low:Q", title=COND_TITLE), y2="ci_high:Q")
    return alt.layer(bars, points).properties(
        width=WIDTH, height=240, title="Per-position conditional acceptance (95% Wilson interval)"
    )


def speedup_vs_tau(curves: list[Row], markers: list[Row]) -> alt.TopLevelMixin | None:
    """Modelled speedup over the target alone for each tau, with its confidence band, current and recommended tau."""
    if not curves:
        return None
    base = alt.Chart(_values(curves)).encode(
        x=alt.X("tau:Q", title="tau (draft tokens per verify step)", axis=alt.Axis(tickMinStep=1)),
        color=alt.Color("label:N", title="segment"),
    )
    layers: list[Any] = []
    if any(r.get("speedup_low") is not None for r in curves):
        layers.append(base.mark_area(opacity=0.18).encode(y="speedup_low:Q", y2="speedup_high:Q"))
    layers.append(
        base.mark_line(point=True).encode(
            y=alt.Y("speedup:Q", title="speedup (x target alone)"),
            tooltip=[
                "label:N",
                "tau:Q",
                alt.Tooltip("speedup:Q", format=".3f"),
                alt.Tooltip("speedup_low:Q", format=".3f"),
                alt.Tooltip("speedup_high:Q", format=".3f"),
            ],
        )
    )
    if markers:
        layers.append(
            alt.Chart(_values(markers))
            .mark_point(size=160, filled=True, stroke="black")
            .encode(
                x="tau:Q",
                y="speedup:Q",
                color=alt.Color("label:N"),
                shape=alt.Shape(
                    "role:N",
                    title="tau",
                    scale=alt.Scale(domain=["current", "recommended"], range=["circle", "diamond"]),
                ),
                tooltip=["label:N", "role:N", "tau:Q", alt.Tooltip("speedup:Q", format=".3f")],
            )
        )
    rule = alt.Chart(alt.Data(values=[{"y": 1.0}])).mark_rule(color="gray", strokeDash=[2, 2]).encode(y="y:Q")
    layers.append(rule)
    return alt.layer(*layers).properties(
        width=WIDTH,
        height=260,
        title="Speedup versus tau (band: bootstrap CI; circle: current; diamond: recommended)",
    )


def stage_time(stages: list[Row]) -> alt.TopLevelMixin | None:
    """Draft and verify ms per emitted token, stacked, per batch-size bucket (one row of bars per deployment)."""
    if not stages:
        return None
    order = [
        b for b in dict.fromkeys(r["batch_bucket"] for r in sorted(stages, key=lambda r: r["batch_low"]))
    ]
    return (
        alt.Chart(_values(stages))
        .mark_bar()
        .encode(
            x=alt.X("batch_bucket:N", title="batch size", sort=order, axis=alt.Axis(labelAngle=0)),
            y=alt.Y("ms_per_token:Q", title="ms per emitted token", stack="zero"),
            color=alt.Color(
                "stage:N", scale=alt.Scale(domain=["draft", "verify"], range=["#f59e0b", "#2563eb"])
            ),
            row=alt.Row("deployment:N", title=None),
            tooltip=[
                "deployment:N",
                "batch_bucket:N",
                "stage:N",
                alt.Tooltip("ms_per_token:Q", format=".3f"),
                alt.Tooltip("tokens:Q", format=",.0f"),
            ],
        )
        .properties(width=WIDTH // 2, height=120, title="Draft versus verify time per token by batch size")
    )


def quality_over_time(quality: list[Row]) -> alt.TopLevelMixin | None:
    """Acceptance next to quality and shadow-match rate: one panel each, shared time axis (fast-but-wrong view)."""
    if not quality:
        return None
    return (
        alt.Chart(_values(quality))
        .mark_line(point=alt.OverlayMarkDef(size=10))
        .encode(
            x=alt.X("ts:T", title="time (UTC)", scale=UTC),
            y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
            color=alt.Color("deployment:N"),
            row=alt.Row(
                "metric:N",
                title=None,
                sort=["acceptance_rate", "quality", "shadow_match_rate"],
            ),
            tooltip=[
                alt.Tooltip("ts:T", format="%Y-%m-%d %H:%M", formatType="utc"),
                "deployment:N",
                "metric:N",
                alt.Tooltip("value:Q", format=".3f"),
            ],
        )
        .properties(width=WIDTH, height=110, title="Acceptance, quality and shadow-match rate over time")
        .resolve_scale(y="independent")
    )
