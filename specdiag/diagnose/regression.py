"""acceptance_regression: acceptance dropped in a segment; report the most specific segment that explains it.

Every segment (a deployment, or a deployment restricted to one value of one dimension) is tested (its change points,
or the chosen windows), Benjamini-Hochberg runs across all of them, and a candidate needs q <= FDR_Q *and* a material
drop (MIN_DROP). Then, per deployment and tau, change by change:

- a child segment *explains* a drop when it dropped significantly more than the rest of the deployment (parent
  minus child, from the same sums, at the child's split; one-sided z of the difference of the two moves >= 1.645)
  and the rest shows no material, significant drop; the child whose move stands out most is reported, not the parent;
- when no child explains it (the drop is spread across children), the deployment itself is reported, not its children.

Changes within SAME_CHANGE of each other are one incident; changes further apart are reported separately.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from specdiag import stats
from specdiag.diagnose.changepoint import METRICS, SPLIT_P, STRATUM, SegmentTest, compare_at
from specdiag.diagnose.config_changes import coinciding
from specdiag.findings import Finding
from specdiag.stats import Comparison

MIN_DROP = 0.02  # absolute drop in acceptance_rate worth an engineer's time
SAME_CHANGE = timedelta(hours=12)  # changes this close in one deployment and tau are taken as one incident
HOUR = timedelta(hours=1)
HETEROGENEITY_Z = (
    1.645  # one-sided 5%: a child explains a drop only if it moved more than the rest of the deployment
)


def material(t: SegmentTest, sign: float = -1.0) -> bool:
    """Significant after BH, and moved at least MIN_DROP in the direction ``sign``."""
    return t.q_value <= stats.FDR_Q and sign * t.acceptance.diff >= MIN_DROP


def rest_of(
    outer: pl.DataFrame,
    inner: pl.DataFrame,
    split: datetime,
    before_end: datetime | None = None,
    metric: str = "acceptance_rate",
) -> Comparison:
    """``outer``'s sums minus ``inner``'s (a segment and one of its children), hour by hour (and stratum by stratum)
    over ``outer``'s hours, before vs after ``split``."""
    cols = list(dict.fromkeys(METRICS[metric]))
    keys = ["hour", STRATUM] if STRATUM in outer.columns and STRATUM in inner.columns else ["hour"]
    rest = (
        outer.select([*keys, *cols])
        .join(inner.select([*keys, *cols]), on=keys, how="left", suffix="_child")
        .with_columns([(pl.col(k) - pl.col(f"{k}_child").fill_null(0)).alias(k) for k in cols])
        .select([*keys, *cols])
    )
    return compare_at(rest, metric, split, before_end)


def complement(
    parent_series: pl.DataFrame,
    child: SegmentTest,
    others: list[SegmentTest] | None = None,
    metric: str = "acceptance_rate",
) -> Comparison:
    """The rest of the deployment (parent minus child) before vs after the child's split.

    Compared over the hours of the child's interval that hold none of ``others``' splits (the changes found in the
    child's siblings, i.e. in the rest itself) further than SAME_CHANGE from the child's: a later, unrelated change
    of the rest would otherwise blur the move it made at the child's split.
    """
    first, last = _span(child.frame)
    for t in others or []:
        if near(t, child):
            continue
        if t.split < child.split:
            first = max(first, t.split)
        else:
            last = min(last, (t.before_end or t.split) - HOUR)
    outer = parent_series.filter(pl.col("hour").is_between(first, last))
    inner = child.frame.filter(pl.col("hour").is_between(first, last))
    return rest_of(outer, inner, child.split, child.before_end, metric)


def moved(c: Comparison, sign: float) -> bool:
    """A material, significant move in the direction ``sign`` (for the rest of a deployment: no search, no BH)."""
    return sign * c.diff >= MIN_DROP and c.p_value <= stats.FDR_Q


def near(a: SegmentTest, b: SegmentTest) -> bool:
    """Two changes close enough in time to be one incident seen in two segments."""
    return abs(a.split - b.split) <= SAME_CHANGE


def accounted(
    outer: pl.DataFrame, t: SegmentTest, reported: list[tuple[SegmentTest, dict[str, Any]]], sign: float
) -> bool:
    """``outer`` (the deployment's rows over t's interval) minus a reported child shows no material, significant
    move at t's split: t's move is that child's."""
    return any(
        not moved(rest_of(outer, r[0].series, t.split, t.before_end), sign)
        for r in reported
        if r[0].segment.dimension != "deployment"
    )


def explain(tests: list[SegmentTest], sign: float = -1.0) -> list[tuple[SegmentTest, dict[str, Any]]]:
    """The changes to report and, for each, what the rest of its deployment did.

    Per deployment and tau, every material change of a child segment is checked against the rest of the
    deployment at its split; explaining children are reported strongest first, one per change (children whose split
    is within SAME_CHANGE of a reported one are listed in its ``also_explained_by``). A material change of the
    deployment itself is reported unless a reported child accounts for it (the deployment minus that child shows no
    material, significant move at the deployment's split).
    """
    chosen: list[tuple[SegmentTest, dict[str, Any]]] = []
    by_dep: dict[tuple[str, int], list[SegmentTest]] = {}
    for t in tests:
        by_dep.setdefault((t.segment.deployment, t.segment.tau), []).append(t)
    for group in by_dep.values():
        parents = [t for t in group if t.segment.dimension == "deployment"]
        children = [t for t in group if t.segment.dimension != "deployment" and material(t, sign)]
        parent_series = parents[0].series if parents else None
        # the changes binary segmentation cut the series at
        changes = [t for t in group if t.p_value <= SPLIT_P]
        explaining, proper = [], []
        for child in children:
            if parent_series is None:
                continue
            siblings = [
                t
                for t in changes
                if t.segment.dimension == child.segment.dimension and t.segment.value != child.segment.value
            ]
            rest = complement(parent_series, child, siblings)
            if min(rest.before.n, rest.after.n) < stats.MIN_REQUESTS:
                continue  # the child is (nearly) all of the deployment: not more specific than its parent
            proper.append(child)
            # heterogeneity: the child moved more than the rest (one-sided z test of the difference of the moves);
            # a segment that merely contains the moved one (most of the traffic, say) moved like its rest
            het = (child.acceptance.diff - rest.diff) / math.hypot(child.acceptance.se, rest.se)
            if sign * het >= HETEROGENEITY_Z and not moved(rest, sign):
                explaining.append((child, rest, sign * het))
        reported: list[tuple[SegmentTest, dict[str, Any]]] = []
        explaining.sort(key=lambda cr: -cr[2])  # the child whose move stands out most from the rest first
        for child, rest, _ in explaining:
            same = next((r for r in reported if near(r[0], child)), None)
            if same is None:
                reported.append((child, {"rest_of_deployment": _cmp_json(rest), "also_explained_by": []}))
            elif child.segment.fields not in [same[0].segment.fields, *same[1]["also_explained_by"]]:
                same[1]["also_explained_by"].append(child.segment.fields)

        for parent in (t for t in parents if material(t, sign)):
            # a reported child within SAME_CHANGE is the same incident; one further away accounts for the deployment's
            # move when the deployment minus that child does not move (the diluted drop's split is noisier)
            if not any(near(r[0], parent) for r in reported) and not accounted(
                parent.frame, parent, reported, sign
            ):
                reported.append((parent, {}))
        # a change diluted below significance in the parent that no single child explains (several children moved):
        # report the children of the dimension with the strongest evidence, change by change, unless a reported child
        # accounts for the move (a segment overlapping the reported one, its split found some hours away)
        left = [
            c
            for c in proper
            if not any(near(r[0], c) for r in reported)
            and not (
                parent_series is not None
                and accounted(
                    parent_series.filter(pl.col("hour").is_between(*_span(c.frame))), c, reported, sign
                )
            )
        ]
        while left:
            top = max(left, key=lambda c: abs(c.acceptance.z))
            reported.extend(
                (c, {}) for c in left if c.segment.dimension == top.segment.dimension and near(c, top)
            )
            left = [c for c in left if not near(c, top)]
        chosen.extend(reported)
    return chosen


def _span(frame: pl.DataFrame) -> tuple[datetime, datetime]:
    return frame["hour"].min(), frame["hour"].max()  # type: ignore[return-value]


def _cmp_json(c: Comparison) -> dict[str, Any]:
    return {
        "before": c.before.value,
        "before_ci": list(c.before.ci()),
        "n_before": c.before.n,
        "after": c.after.value,
        "after_ci": list(c.after.ci()),
        "n_after": c.after.n,
        "diff": c.diff,
        "p_value": c.p_value,
    }


def decode_loss(t: SegmentTest) -> tuple[float, float]:
    """(relative decode slowdown, lost output tokens/s) implied by the drop in tokens per verify step.

    At a fixed step cost, decode speed is proportional to the mean acceptance length MAL = 1 + accepted /
    verify_steps, so the slowdown is 1 - MAL_after / MAL_before, and the after window's output tokens/s would have
    been larger by MAL_before / MAL_after - 1 of itself.
    """
    rows = t.frame
    before = rows.filter(pl.col("hour") < (t.before_end or t.split))
    after = rows.filter(pl.col("hour") >= t.split)

    def mal(r: pl.DataFrame) -> float:
        steps = float(r["verify_steps"].sum())
        return 1.0 + float(r["accepted"].sum()) / steps if steps > 0 else float("nan")

    mal_b, mal_a = mal(before), mal(after)
    loss = 1.0 - mal_a / mal_b
    if after["output_tokens"].null_count() == after.height:  # engine windows that print no throughput
        return loss, float("nan")
    seconds = max(after["hour"].n_unique(), 1) * 3600.0  # hours with traffic after the split
    tokens_per_s = float(after["output_tokens"].sum()) / seconds
    return loss, tokens_per_s * (mal_b / mal_a - 1.0)


def _test_name(t: SegmentTest, searched: bool) -> str:
    if not searched:
        return "windows (two-sided z)"
    if t.before_end is not None:
        return "configuration change (z, Bonferroni over changes and the scan)"
    return "change point (scan-corrected z)"


WINDOW_UNIT = "5-minute bucket of engine windows"  # what n_before / n_after count for engine metrics


def engine_source(t: SegmentTest) -> str | None:
    """The engine source (e.g. ``vllm-v1-log/2025-09``) of a series read from engine windows, None for requests."""
    if "source" not in t.frame.columns:
        return None
    sources = t.frame["source"].drop_nulls().unique().to_list()
    return str(sources[0]) if sources else None


def severity(loss: float) -> str:
    return "high" if loss >= 0.10 else "medium" if loss >= 0.03 else "low"


def findings(tests: list[SegmentTest], cfg: pl.DataFrame, searched: bool = True) -> list[Finding]:
    out = []
    for t, extra in explain(tests, sign=-1.0):
        seg = t.segment
        start = t.frame["hour"].min() if searched else None
        changes = coinciding(cfg, seg.deployment, seg.fields, t.split, start=start)  # type: ignore[arg-type]
        since: datetime = changes[0]["at"] if changes else t.split
        loss, lost_tps = decode_loss(t)
        c = t.acceptance
        where = ", ".join(f"{k} {v}" for k, v in seg.fields.items()) or "all traffic"
        source = engine_source(t)
        if source is not None:  # a deployment known only from engine metrics: say which, and at which tau
            where += f", tau {seg.tau}, engine metrics {source}"
        cause = (
            f"; coincides with {changes[0]['setting']} {changes[0]['before']} -> {changes[0]['after']}"
            if changes
            else ""
        )
        summary = (
            f"acceptance_rate fell from {c.before.value:.3f} to {c.after.value:.3f} on {seg.deployment} "
            f"({where}) since {since:%Y-%m-%d %H:%M}{cause}."
        )
        evidence = {
            "metric": "acceptance_rate",
            "tau": seg.tau,
            **_cmp_json(c),
            "p_value": t.p_value,
            "q_value": t.q_value,
            "test": _test_name(t, searched),
            "split": t.split,
            "decode_slowdown": loss,
            "lost_tokens_per_s": lost_tps if math.isfinite(lost_tps) else None,  # unknown without throughput
            "config_changes": changes,
            **extra,
        }
        if source is not None:
            evidence |= {"source": source, "unit": WINDOW_UNIT}
        out.append(
            Finding(
                "acceptance_regression", seg.deployment, seg.fields, severity(loss), summary, evidence, since
            )
        )
    return out
