"""Prometheus text exposition scrapes of vLLM (V1 and V0), SGLang, TensorRT-LLM and TGI.

Counters are cumulative since process start: each scrape becomes a counter sample per series and windows come
from differencing (see _windows; scrapes in separate files difference against each other through the store).
A file holds one scrape at the file's modification time, or several whose samples carry a timestamp (ms since
the epoch); without timestamps a series may appear only once per file.

What each family becomes (names also accepted with `vllm_` / `sglang_` instead of `vllm:` / `sglang:`):
  vLLM V1   spec_decode_num_drafts_total -> verify_steps, num_draft_tokens_total -> drafted,
            num_accepted_tokens_total -> accepted, num_accepted_tokens_per_pos_total{position} ->
            accepted_per_position; `*_created` ignored
  vLLM V0   gauges spec_decode_draft_acceptance_rate / spec_decode_efficiency (lifetime ratios, a window since
            start); its `*_total` counters are unusable (incremented by lifetime totals) and ignored
  SGLang    gauges spec_accept_length / spec_accept_rate (last interval only): a window with MAL and rate
  TRT-LLM   num_draft_tokens_total -> drafted, num_accepted_tokens_total -> accepted,
            accepted_tokens_total{token_position} -> accepted_per_position, drafted_tokens_total{token_position=0}
            -> verify_steps (every draft has a first token); gauges acceptance_length, draft_overhead
  TGI       tgi_request_skipped_tokens summary: _sum -> accepted, _count -> verify_steps (one observation per
            request per decode step, so MAL = 1 + sum / count); no drafted count
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from specdiag.formats import Line, ParseContext, Parsed, Reject
from specdiag.formats._envelope import deployment_for, index
from specdiag.formats._windows import sample, window

NAME = "prometheus"

SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^{}]*)\})?[ \t]+(?P<value>\S+)(?:[ \t]+(?P<ts>-?\d+(?:\.\d+)?))?\s*$"
)
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
COMMENT = re.compile(r"^#\s*(HELP|TYPE|EOF)\b")
KNOWN_PREFIXES = ("vllm:", "vllm_", "sglang:", "sglang_", "trtllm_", "tgi_")

# family -> (source, role); roles name the counter or window field the value feeds
FAMILIES: dict[str, tuple[str, str]] = {
    "vllm:spec_decode_num_drafts_total": ("vllm-v1", "verify_steps"),
    "vllm:spec_decode_num_draft_tokens_total": ("vllm-v1", "drafted"),
    "vllm:spec_decode_num_accepted_tokens_total": ("vllm-v1", "accepted"),
    "vllm:spec_decode_num_accepted_tokens_per_pos_total": ("vllm-v1", "accepted_per_position"),
    "vllm:spec_decode_draft_acceptance_rate": ("vllm-v0", "printed_acceptance_rate"),
    "vllm:spec_decode_efficiency": ("vllm-v0", "system_efficiency"),
    "vllm:spec_decode_num_emitted_tokens_total": ("vllm-v0", "emitted_v0"),  # only V0 exported it
    "sglang:spec_accept_length": ("sglang", "printed_mean_acceptance_length"),
    "sglang:spec_accept_rate": ("sglang", "printed_acceptance_rate"),
    "trtllm_spec_decode_num_draft_tokens_total": ("trtllm", "drafted"),
    "trtllm_spec_decode_num_accepted_tokens_total": ("trtllm", "accepted"),
    "trtllm_spec_decode_accepted_tokens_total": ("trtllm", "accepted_per_position"),
    "trtllm_spec_decode_drafted_tokens_total": ("trtllm", "drafted_per_position"),
    "trtllm_spec_decode_acceptance_length": ("trtllm", "printed_mean_acceptance_length"),
    "trtllm_spec_decode_draft_overhead": ("trtllm", "draft_overhead"),
    "tgi_request_skipped_tokens_sum": ("tgi", "accepted"),
    "tgi_request_skipped_tokens_count": ("tgi", "verify_steps"),
}
MAX_POSITIONS = 64  # draft positions: far above any real num_speculative_tokens
COUNTER_ROLES = {"verify_steps", "drafted", "accepted", "accepted_per_position", "drafted_per_position"}
WINDOW_ROLES = {"printed_mean_acceptance_length", "printed_acceptance_rate"}


def family(name: str) -> str:
    for old, new in (("vllm_", "vllm:"), ("sglang_", "sglang:")):
        if name.startswith(old):
            return new + name[len(old) :]
    return name


def detect(head: list[str]) -> bool:
    """Prometheus text: an engine family among the first lines, and (nearly) every line a comment or a sample."""
    known, total, foreign = False, 0, 0
    for line in head:
        text = line.strip()
        if not text:
            continue
        total += 1
        if text.startswith("#"):
            known = known or bool(COMMENT.match(text) and any(p in text for p in KNOWN_PREFIXES))
            continue
        match = SAMPLE.match(text)
        if match is None:
            foreign += 1
        else:
            known = known or match["name"].startswith(KNOWN_PREFIXES)
    return known and foreign * 4 <= total


def labels_of(text: str | None) -> dict[str, str]:
    """`a="1",b="x"` -> {"a": "1", "b": "x"}; raises ValueError on anything else."""
    if not text or not text.strip():
        return {}
    labels, position = {}, 0
    while position < len(text):
        match = LABEL.match(text, position)
        if match is None:
            raise ValueError(f"bad labels {{{text}}}")
        labels[match[1]] = match[2].replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
        position = match.end()
    return labels


def value_of(text: str) -> float | None:
    """A sample value; NaN and infinities are None (no count to use). Raises ValueError otherwise, and for a value
    past 2^63, which no counter reaches and the store's BIGINT counts cannot hold."""
    value = float(text)
    if math.isfinite(value) and abs(value) >= 2.0**63:
        raise ValueError(f"value {text.strip()[:40]} is too large for a count")
    return value if math.isfinite(value) else None


def parse(lines: Iterable[Line], ctx: ParseContext) -> Parsed:
    out = Parsed(format=NAME)
    scrape_ts = ctx.mtime or datetime.now(UTC).replace(tzinfo=None)
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}  # (source, deployment, engine, instance, ts) -> values
    seen: set[tuple[str, tuple[tuple[str, str], ...], datetime]] = set()
    for line in lines:
        text = line.raw.decode("utf-8", errors="replace").strip()
        if not text:
            out.blank += 1
            continue
        match = SAMPLE.match(text)
        name = family(match["name"]) if match else ""
        if match is None or name not in FAMILIES:
            looks_known = text.startswith(KNOWN_PREFIXES) and "spec" in text and not text.startswith("#")
            if match is None and looks_known:
                out.rejects.append(_reject(line, "not a `name{labels} value [timestamp]` sample"))
            else:
                out.other_lines += 1  # comments, `_created`, other metrics
            continue
        try:
            labels = labels_of(match["labels"])
            value = value_of(match["value"])
            ts = _scrape_time(match["ts"], scrape_ts)
        except ValueError as exc:
            out.rejects.append(_reject(line, str(exc)))
            continue
        identity = (name, tuple(sorted(labels.items())), ts)
        if identity in seen:
            out.rejects.append(_reject(line, "the same series twice in one scrape (add sample timestamps)"))
            continue
        seen.add(identity)
        source, role = FAMILIES[name]
        key = (
            source,
            deployment_for(ctx, labels.get("model_name")),
            _engine(labels.get("engine")),
            _instance(labels, keep_model=bool(ctx.deployment)),
            ts,
        )
        group = groups.setdefault(key, {"lines": [], "line": line.number})
        group["lines"].append(line.number)
        position = index(labels.get("position", labels.get("token_position")))
        if role in ("accepted_per_position", "drafted_per_position"):
            if position is None or position >= MAX_POSITIONS:
                group["lines"].pop()
                out.rejects.append(
                    _reject(line, f"{name} without a position label in 0..{MAX_POSITIONS - 1}")
                )
                continue
            group.setdefault(role, {})[position] = value
        else:
            group[role] = value
    _finish(groups, out)
    return out


def _scrape_time(stamp: str | None, default: datetime) -> datetime:
    """A sample's timestamp as naive UTC, else the scrape's (the file's mtime).

    Prometheus text prints ms since the epoch, OpenMetrics seconds (often with a fraction): a value below 1e11
    (1973 in ms, year 5138 in seconds) is taken as seconds.
    """
    if not stamp:
        return default
    value = float(stamp)
    seconds = value / 1000 if value >= 1e11 and "." not in stamp else value
    try:
        return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)
    except (OverflowError, OSError, ValueError) as exc:
        raise ValueError(f"timestamp {stamp} is out of range") from exc


# labels that name what a sample counts, not which process: the rest tell processes (and ranks) apart
COUNT_LABELS = {"model_name", "engine", "position", "token_position"}


def _instance(labels: dict[str, str], keep_model: bool = False) -> str | None:
    """`instance`, `job`, `tp_rank`... as `k=v,...` (sorted), so that two processes never share a series.

    ``keep_model``: --deployment names the deployment, so `model_name` stays here: two models' series would
    otherwise be one, each scrape's values overwriting the other's."""
    skip = COUNT_LABELS - {"model_name"} if keep_model else COUNT_LABELS
    rest = sorted((k, v) for k, v in labels.items() if k not in skip)
    return ",".join(f"{k}={v}" for k, v in rest) or None


def _engine(label: str | None) -> str | None:
    number = index(label)
    return str(number) if number is not None else label


def _reject(line: Line, detail: str) -> Reject:
    return Reject(line.number, line.byte_offset, "unparsable_metrics", detail, line.raw)


def _positions(values: dict[int, float | None] | None) -> list[float | None] | None:
    if not values:
        return None
    return [values.get(i) for i in range(max(values) + 1)]


def _finish(groups: dict[tuple[Any, ...], dict[str, Any]], out: Parsed) -> None:
    # V0 exported counters under the V1 names (incremented by lifetime totals): a scrape with V0 families is V0
    v0_scrapes = {key[1:] for key in groups if key[0] == "vllm-v0"}
    for (source, deployment, engine, instance, ts), group in groups.items():
        if source == "vllm-v1" and (deployment, engine, instance, ts) in v0_scrapes:
            out.other_lines += len(group["lines"])  # V0's lifetime-incremented counters: unusable
            continue
        extra: dict[str, Any] = {k: group[k] for k in ("system_efficiency", "draft_overhead") if k in group}
        shown = {name: group[name] for name in WINDOW_ROLES if name in group}
        if source == "vllm-v0" and not (shown or extra):
            out.other_lines += len(group["lines"])  # only the unusable emitted-tokens counter
            continue
        counters = COUNTER_ROLES & set(group)
        common = {"source": f"prometheus/{source}", "deployment": deployment, "engine": engine}
        common["instance"] = instance
        if counters:
            drafted_at = _positions(group.get("drafted_per_position"))
            verify_steps = group.get("verify_steps")
            if verify_steps is None and drafted_at:
                verify_steps = drafted_at[0]
            per_position = _positions(group.get("accepted_per_position"))
            if drafted_at:
                extra["cumulative_drafted_per_position"] = drafted_at  # as scraped, not differenced
            out.samples.append(
                sample(
                    **common,
                    ts=ts,
                    tau=len(per_position) if per_position else None,
                    verify_steps=verify_steps,
                    drafted=group.get("drafted"),
                    accepted=group.get("accepted"),
                    accepted_per_position=per_position,
                    window_fields={**shown, "extra": extra},
                    line=group["line"],
                )
            )
        else:  # gauges only: a window ending at the scrape (V0's lifetime ratios: since start)
            since_start = source == "vllm-v0"
            if since_start:
                extra["since_start"] = True
            out.windows.append(window(**common, end_ts=ts, extra=extra, line=group["line"], **shown))
        out.used_lines += len(group["lines"])
