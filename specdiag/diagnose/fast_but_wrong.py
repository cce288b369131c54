"""fast_but_wrong: speculation got faster (or stayed fast) while its output drifted from the target's.

Lossless speculative decoding (Leviathan et al. 2023; Chen et al. 2023 Alg. 2) never changes the output
distribution, so any of these signals means the deployment is no longer serving what the target alone would write:

- statistics: acceptance went up (a change point or the chosen windows, BH-adjusted with the regression tests'
  family) while quality or the shadow-match rate went down at the same split, each a material, significant move;
- acceptance close to 1 at temperature > 0: a day whose acceptance_rate has a lower 95% bound above NEAR_ONE is only
  possible when draft and target agree almost everywhere (the same model, or a verifier swapped for the draft);
- target_model equal to draft_model, or a new target_model with fewer parameters than the one it replaced;
- a lossy acceptance rule in the records (anything outside traceformat.LOSSLESS_RULES, e.g. ``typical``).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from specdiag import stats
from specdiag.diagnose.changepoint import SegmentTest, sums
from specdiag.diagnose.regression import _cmp_json, explain
from specdiag.findings import Finding
from specdiag.traceformat import LOSSLESS_RULES, acceptance_rule

NEAR_ONE = 0.97
MIN_QUALITY_DROP = 0.02  # absolute drop in mean quality, or in the shadow-match rate
# a target_model first seen this soon after the deployment's first request was served from the start, not swapped in
SWAP_AFTER = timedelta(hours=1)


# A parameter count in a model id: "70b", "1.1B", "135M", a mixture of experts' "8x7B" (8 experts of 7B). A count
# right after a separator and "A" ("Qwen3-235B-A22B") is the active parameters per token, not the model's size.
_SIZE = re.compile(r"(?:(\d+)x)?(\d+(?:\.\d+)?)\s*([bBmM])(?![a-zA-Z])")
_ACTIVE = re.compile(r"(?:^|[-_/.@ ])[aA]$")


def _size_b(model: str) -> float | None:
    """Parameter count in billions parsed from a model id (``llama-3-70b-v2`` -> 70), None when absent.

    The last count in the id wins; an active-parameter count (``-A22B``) is skipped, and ``8x7B`` is 56. A count in
    millions is read only from an id without a count in billions: in ``Qwen2.5-14B-Instruct-1M`` the ``1M`` is the
    context length of a 14B model, not its size.
    """
    size: dict[str, float | None] = {"b": None, "m": None}
    for match in _SIZE.finditer(model):
        if _ACTIVE.search(model[: match.start()]):
            continue
        experts, num, unit = match.groups()
        size[unit.lower()] = float(experts or 1) * float(num) / (1000.0 if unit in "mM" else 1.0)
    return size["b"] if size["b"] is not None else size["m"]


def statistical(tests: list[SegmentTest]) -> list[tuple[SegmentTest, dict[str, Any]]]:
    """Segments whose acceptance rose while quality or shadow matches fell at the same split."""
    out = []
    for t, extra in explain(tests, sign=+1.0):
        moves: dict[str, Any] = {}
        for metric in ("quality", "shadow_match_rate"):
            c = t.compare(metric)
            if min(c.before.n, c.after.n) < stats.MIN_REQUESTS:
                continue
            # Bonferroni over the two quality metrics on top of the acceptance test's BH
            if c.p_value <= stats.FDR_Q / 2 and -c.diff >= MIN_QUALITY_DROP:
                moves[metric] = _cmp_json(c)
        if moves:
            out.append((t, {**extra, **moves}))
    return out


def near_one(frame: pl.DataFrame) -> list[tuple[str, str, datetime, dict[str, Any]]]:
    """(deployment, temperature bucket, first day, evidence) where a day's acceptance is ~1 at temperature > 0."""
    rows = frame.filter(
        (pl.col("dimension") == "temperature_bucket") & ~pl.col("value").is_in(["0", "unknown"])
    ).with_columns(pl.col("hour").dt.truncate("1d").alias("day"))
    hits = []
    for key, group in rows.sort("day").group_by(["deployment", "value"], maintain_order=True):
        for day, day_rows in group.group_by("day", maintain_order=True):
            r = sums(day_rows, "acceptance_rate")
            lo = r.ci()[0]
            if r.n >= stats.MIN_REQUESTS and lo > NEAR_ONE:
                evidence = {
                    "acceptance_rate": r.value,
                    "ci": list(r.ci()),
                    "n": r.n,
                    "temperature_bucket": key[1],
                }
                hits.append((str(key[0]), str(key[1]), day[0], evidence))
                break
    return hits


def config_signals(cfg: pl.DataFrame) -> list[tuple[str, str | None, datetime, str, dict[str, Any]]]:
    """(deployment, task or None, since, signal, evidence) from the configuration values in the records."""
    out: list[tuple[str, str | None, datetime, str, dict[str, Any]]] = []
    dep_rows = cfg.group_by(["deployment", "setting", "value"]).agg(
        pl.col("first_seen").min(), pl.col("n").sum()
    )
    for row in dep_rows.filter(pl.col("setting") == "acceptance").iter_rows(named=True):
        if acceptance_rule(str(row["value"])) not in LOSSLESS_RULES:
            out.append(
                (
                    row["deployment"],
                    None,
                    row["first_seen"],
                    f"lossy acceptance rule {row['value']!r}",
                    {"acceptance": row["value"], "n": row["n"]},
                )
            )
    for row in dep_rows.filter((pl.col("setting") == "same_model") & (pl.col("value") == "true")).iter_rows(
        named=True
    ):
        out.append(
            (row["deployment"], None, row["first_seen"], "target_model equals draft_model", {"n": row["n"]})
        )
    for dep, group in dep_rows.filter(pl.col("setting") == "target_model").group_by("deployment"):
        ordered = group.sort("first_seen")
        values = ordered["value"].to_list()
        start = ordered["first_seen"][0]
        for prev, new, at in zip(values, values[1:], ordered["first_seen"].to_list()[1:]):
            if at <= start + SWAP_AFTER:
                continue  # served from the start beside the other (a deployment routing to two targets): no swap
            sp, sn = _size_b(prev), _size_b(new)
            if sp is not None and sn is not None and sn < sp:
                out.append(
                    (
                        str(dep[0]),
                        None,
                        at,
                        f"target_model swapped for a smaller model ({prev} -> {new})",
                        {"target_before": prev, "target_after": new},
                    )
                )
    return out


def findings(tests: list[SegmentTest], frame: pl.DataFrame, cfg: pl.DataFrame) -> list[Finding]:
    """One finding per deployment, merging every signal that points at it."""
    per_dep: dict[str, dict[str, Any]] = {}

    def add(
        dep: str, segment: dict[str, str], since: datetime, signal: str, evidence: dict[str, Any]
    ) -> None:
        entry = per_dep.setdefault(dep, {"segment": segment, "since": since, "signals": []})
        if not entry["segment"] and segment:
            entry["segment"] = segment
        entry["since"] = min(entry["since"], since)
        entry["signals"].append({"signal": signal, **evidence})

    for t, moves in statistical(tests):
        c = t.acceptance
        add(
            t.segment.deployment,
            t.segment.fields,
            t.split,
            "acceptance up while quality or shadow matches down",
            {"acceptance": {**_cmp_json(c), "q_value": t.q_value, "p_value": t.p_value}, **moves},
        )
    for dep, bucket, day, ev in near_one(frame):
        add(dep, {"temperature_bucket": bucket}, day, "acceptance close to 1 at temperature > 0", ev)
    for dep, task, since, signal, ev in config_signals(cfg):
        add(dep, {"task": task} if task else {}, since, signal, ev)

    out = []
    for dep, entry in per_dep.items():
        names = "; ".join(s["signal"] for s in entry["signals"])
        summary = (
            f"{dep} no longer serves the target's own output since {entry['since']:%Y-%m-%d %H:%M}: {names}."
        )
        out.append(
            Finding(
                "fast_but_wrong",
                dep,
                entry["segment"],
                "high",
                summary,
                {"signals": entry["signals"]},
                entry["since"],
            )
        )
    return out
