"""vLLM engine logs: V1 `SpecDecoding metrics:` lines (per interval) and V0 `Speculative metrics:` (cumulative).

V1 shapes, told apart by their fields (docs/engine-formats.md):
  2025-09  `Mean acceptance length, Accepted throughput, Drafted throughput, Accepted, Drafted, Per-position
           acceptance rate, Avg Draft acceptance rate`
  2025-05  `Draft acceptance rate, Mean acceptance length, Accepted, Drafted, Per-position acceptance rate` with
           MAL = 1 + sum(rates); 2025-04-24 is the same line with MAL = sum(rates) (bonus token excluded)
  2025-04  `Draft acceptance rate, Accepted, Drafted`
V1 counts: accepted and drafted as printed; verify_steps = accepted / (MAL - 1) (= accepted / MAL in 2025-04-24);
accepted_per_position[i] = rate[i] * verify_steps. With data parallelism each engine's `Engine NNN: Avg prompt
throughput ...` line comes right before its SpecDecoding line, which is attributed to it (same process prefix).

V0 lines are cumulative since engine start and become counter samples (see _windows). V0's "accepted tokens"
counts tokens accepted after the first rejection too, so the V1-sense count is derived from emitted tokens:
verify_steps = draft_tokens / k, accepted = emitted - verify_steps (each step emits its accepted prefix plus one
bonus or correction token).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from specdiag.formats import Line, ParseContext, Parsed, Reject
from specdiag.formats._envelope import (
    ANSI,
    PROCESS,
    VLLM_ENVELOPE,
    Clock,
    count,
    decode,
    deployment_for,
    fields,
    index,
    number,
)
from specdiag.formats._windows import sample, window

NAME = "vllm-log"

V1_MARKER = "SpecDecoding metrics:"
V0_MARKER = "Speculative metrics:"
STAGES_MARKER = "SpecDecodeWorker stage times:"
MARKERS = (V1_MARKER, V0_MARKER, STAGES_MARKER)
STATS = re.compile(r"^(?:Engine (?P<engine>\d+): )?(?P<body>Avg prompt throughput: .*)$")
DP_NAME = re.compile(r"DP(\d+)")


def detect(head: list[str]) -> bool:
    hits = [VLLM_ENVELOPE.match(ANSI.sub("", line).rstrip("\r\n")) for line in head if line.strip()]
    return any(hits)


@dataclass
class _Stats:
    line: Line
    engine: str | None
    throughput: float | None
    running: float | None


@dataclass
class _Stages:
    ts: datetime
    line: int
    times: dict[str, float]  # ms


class UnparsableError(ValueError):
    """A metrics line whose fields do not parse: becomes a reject."""


def parse(lines: Iterable[Line], ctx: ParseContext) -> Parsed:
    out = Parsed(format=NAME)
    clock = Clock(ctx)
    pending: dict[str, _Stats] = {}  # process prefix -> its last `Avg prompt throughput` line
    stages: dict[str, list[_Stages]] = {}  # process -> stage-time lines waiting for a V0 sample
    last_stages: dict[str, list[_Stages]] = {}  # process -> the stage-time lines its last V0 sample took
    v0_samples: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        if not line.raw.strip():
            out.blank += 1
            continue
        text = decode(line.raw)
        marker = next((m for m in MARKERS if m.encode() in line.raw), None)
        if text is None:
            if marker:
                out.rejects.append(
                    Reject(line.number, line.byte_offset, "invalid_utf8", "not UTF-8", line.raw)
                )
            else:
                out.other_lines += 1
            continue
        envelope = VLLM_ENVELOPE.match(text)
        if marker is None:
            stats = _stats(envelope, line)
            if stats is None:
                out.other_lines += 1
                continue
            key = envelope["prefix"].strip()  # type: ignore[index]
            if key in pending:
                out.other_lines += 1  # an interval without a SpecDecoding line
            pending[key] = stats
            continue
        if envelope is not None and not envelope["message"].startswith(marker):
            out.other_lines += 1  # the words inside another message (an echoed prompt, say)
            continue
        try:
            if envelope is None:
                raise UnparsableError(f"expected `<LEVEL> MM-DD HH:MM:SS [file:line] {marker}`")
            ts = clock.without_year(
                int(envelope["month"]), int(envelope["day"]), envelope["time"], envelope["frac"], out.notes
            )
            body = envelope["message"][len(marker) :]
            process = envelope["prefix"].strip()
            if marker == V1_MARKER:
                stats = pending.pop(process, None)
                try:
                    row = _v1_window(body, ctx, ts, line.number, process, stats)
                except ValueError:
                    out.other_lines += 1 if stats else 0  # its companion line stays accounted for
                    raise
                out.used_lines += 1 + (1 if stats else 0)
                out.windows.append(window(**row))
            elif marker == V0_MARKER:
                row = _v0_sample(body, ctx, ts, line.number, process)
                waiting = stages.pop(process, None)
                if waiting:
                    row["window_fields"].update(_mean_stages(waiting))
                last_stages[process] = waiting or []
                v0_samples.setdefault(process, []).append(row)
                out.used_lines += 1
            else:
                times = _stage_times(body)  # before touching `stages`: it may raise
                stages.setdefault(process, []).append(_Stages(ts, line.number, times))
                out.used_lines += 1
        except (UnparsableError, ValueError) as exc:
            out.rejects.append(
                Reject(line.number, line.byte_offset, "unparsable_metrics", str(exc), line.raw)
            )
    out.other_lines += len(pending)
    for process, waiting in stages.items():  # stage times after the last V0 line: averaged into that line's
        if v0_samples.get(process):
            v0_samples[process][-1]["window_fields"].update(_mean_stages(last_stages[process] + waiting))
        else:  # no counters at all: keep the timings as a window of their own
            out.windows.append(
                window(
                    source="vllm-v0-log",
                    deployment=deployment_for(ctx),
                    instance=_instance(process),
                    end_ts=waiting[-1].ts,
                    line=waiting[-1].line,
                    **_mean_stages(waiting),
                )
            )
    out.samples = [sample(**row) for rows in v0_samples.values() for row in rows]
    return out


def _stats(envelope: re.Match[str] | None, line: Line) -> _Stats | None:
    """`Engine 000: Avg prompt throughput: 0.0 tokens/s, Avg generation throughput: 612.3 tokens/s, Running: 24
    reqs, ...`: the companion of the SpecDecoding line that follows it."""
    if envelope is None:
        return None
    match = STATS.match(envelope["message"])
    if match is None:
        return None
    try:
        values = {name.lower(): value for name, value in fields(match["body"])}
        throughput = number(values.get("avg generation throughput", "nan").removesuffix(" tokens/s"))
        running = number(values.get("running", "nan").removesuffix(" reqs"))
    except ValueError:
        return None
    engine_index = index(match["engine"])
    engine = str(engine_index) if engine_index is not None else match["engine"]
    return _Stats(line, engine, throughput, running)


def _rate(text: str) -> float | None:
    """`61.3%` -> 0.613; `0.612` -> 0.612; nan -> None."""
    value = number(text)
    if value is not None and text.strip().endswith("%"):
        value /= 100.0
    return value


def _v1_window(
    body: str, ctx: ParseContext, ts: datetime, line: int, process: str, stats: _Stats | None
) -> dict[str, Any]:
    values = {name.lower(): value for name, value in fields(body)}
    if "accepted" not in values or "drafted" not in values:
        raise UnparsableError("SpecDecoding line without `Accepted:` and `Drafted:`")
    accepted, drafted = count(values.pop("accepted")), count(values.pop("drafted"))
    if accepted is not None and drafted is not None and accepted > drafted:
        raise UnparsableError(f"Accepted {accepted} > Drafted {drafted}")
    printed_mal = number(values.pop("mean acceptance length", "nan"))
    has_mal = printed_mal is not None
    rates = None
    if "per-position acceptance rate" in values:
        rates = [number(v) for v in values.pop("per-position acceptance rate").split(",")]
        if any(r is not None and not 0.0 <= r <= 1.0 for r in rates):
            raise UnparsableError(f"per-position acceptance rates outside [0, 1]: {rates}")
    rate_text = values.pop("avg draft acceptance rate", None)
    extra: dict[str, Any] = {}
    if rate_text is not None or "accepted throughput" in values:
        version = "2025-09"
        for name in ("accepted throughput", "drafted throughput"):
            if name in values:
                extra[name.replace(" ", "_") + "_tokens_s"] = number(
                    values.pop(name).removesuffix(" tokens/s")
                )
    elif has_mal or rates is not None:
        version = "2025-05"
    else:
        version = "2025-04"
    rate_text = rate_text if rate_text is not None else values.pop("draft acceptance rate", "nan")
    bonus_excluded = False
    if version == "2025-05" and has_mal and rates and all(r is not None for r in rates):
        total = sum(r for r in rates if r is not None)
        bonus_excluded = abs(printed_mal - total) < abs(printed_mal - 1.0 - total)  # type: ignore[operator]
        version = "2025-04-24" if bonus_excluded else version
    if has_mal and rates and all(r is not None for r in rates):
        # MAL = 1 + sum(rates) (2025-04-24: sum(rates)) up to the printed rounding: 2 decimals for the MAL, 3 for
        # each rate. A line cut inside its rates (a truncated write) breaks it and would store a wrong tau.
        gap = printed_mal - (0.0 if bonus_excluded else 1.0) - sum(r for r in rates if r is not None)  # type: ignore[operator]
        if abs(gap) > 0.005 + 0.0005 * len(rates) + 1e-9:
            raise UnparsableError(
                f"per-position acceptance rates {rates} do not add up to the mean acceptance length {printed_mal}"
                " (a truncated line?)"
            )
    if printed_mal is not None and printed_mal < (0.0 if bonus_excluded else 1.0):
        raise UnparsableError(f"mean acceptance length {printed_mal} < 1 (it counts the bonus token)")
    extra.update({name: value for name, value in values.items()})  # fields this parser does not know
    verify_steps = None
    if printed_mal is not None and accepted:
        tokens_per_step = printed_mal if bonus_excluded else printed_mal - 1.0  # accepted / verify_steps
        verify_steps = accepted / tokens_per_step if tokens_per_step > 0 else None
    elif accepted == 0 and drafted and rates:
        # nothing accepted: the MAL (1.00) says nothing of the steps, but each drafted tau = len(rates) tokens
        verify_steps = drafted / len(rates)
    per_position = None
    if rates is not None and verify_steps is not None:
        per_position = [None if r is None else r * verify_steps for r in rates]
    engine = stats.engine if stats else None
    if engine is None:
        dp = DP_NAME.search(process)
        engine = dp.group(1) if dp else None
    return {
        "source": f"vllm-v1-log/{version}",
        "deployment": deployment_for(ctx),
        "engine": engine,
        "instance": _instance(process),
        "end_ts": ts,
        "tau": len(rates) if rates is not None else None,
        "verify_steps": verify_steps,
        "drafted": drafted,
        "accepted": accepted,
        "accepted_per_position": per_position,
        "printed_mean_acceptance_length": printed_mal,
        # without verify_steps the window keeps the printed MAL, which then lacks the bonus token
        "mean_acceptance_length": printed_mal + 1.0
        if bonus_excluded and verify_steps is None and printed_mal is not None
        else None,
        "printed_acceptance_rate": _rate(rate_text),
        "printed_per_position": rates,
        "throughput_tokens_s": stats.throughput if stats else None,
        "running_requests": stats.running if stats else None,
        "extra": extra,
        "line": line,
    }


V0_NAMES = {
    "draft acceptance rate": "rate",
    "system efficiency": "efficiency",
    "number of speculative tokens": "k",
    "number of accepted tokens": "v0_accepted",
    "number of draft tokens": "drafted",
    "number of emitted tokens": "emitted",
}


def _v0_sample(body: str, ctx: ParseContext, ts: datetime, line: int, process: str) -> dict[str, Any]:
    values: dict[str, str] = {}
    for name, value in fields(body):
        key = re.sub(r"\btokens tokens\b", "tokens", name.lower())  # the 2024 `draft tokens tokens:` variant
        values[V0_NAMES.get(key, key)] = value
    missing = [name for name in ("k", "drafted", "emitted") if name not in values]
    if missing:
        raise UnparsableError(f"Speculative metrics line without {', '.join(missing)}")
    k, drafted, emitted = count(values["k"]), count(values["drafted"]), count(values["emitted"])
    if not k or drafted is None or emitted is None:
        raise UnparsableError("speculative tokens, draft tokens and emitted tokens must be numbers, k > 0")
    verify_steps = drafted / k  # each verify step drafts k tokens per sequence
    if emitted < verify_steps or emitted - verify_steps > drafted:
        raise UnparsableError(
            f"emitted tokens {emitted} outside [steps, steps + drafted] for {drafted} drafted"
        )
    cumulative = {
        "cumulative_v0_accepted_tokens": count(values["v0_accepted"]) if "v0_accepted" in values else None,
        "cumulative_emitted_tokens": emitted,
        "system_efficiency": number(values.get("efficiency", "nan")),
    }
    return {
        "source": "vllm-v0-log",
        "deployment": deployment_for(ctx),
        "engine": None,
        "instance": _instance(process),
        "ts": ts,
        "tau": k,
        "verify_steps": verify_steps,
        "drafted": float(drafted),
        "accepted": emitted - verify_steps,
        "window_fields": {"printed_acceptance_rate": _rate(values.get("rate", "nan")), "extra": cumulative},
        "line": line,
    }


STAGE_NAMES = {
    "average_time_per_proposal_tok_ms": "draft_ms_per_token",
    "scoring_time_ms": "scoring_ms",
    "verification_time_ms": "verification_ms",
}


def _stage_times(body: str) -> dict[str, float]:
    """`average_time_per_proposal_tok_ms=2.31 scoring_time_ms=21.84 verification_time_ms=0.96` (ms)."""
    values: dict[str, float] = {}
    for pair in body.split():
        name, sep, value = pair.partition("=")
        if not sep or name not in STAGE_NAMES:
            raise UnparsableError(f"unexpected stage time {pair!r}")
        parsed = number(value)
        if parsed is not None:
            values[STAGE_NAMES[name]] = parsed
    if not values:
        raise UnparsableError("no stage times")
    return values


def _instance(process: str) -> str | None:
    """The process prefix as "name pid=N" (``(VllmWorkerProcess pid=77)`` -> ``VllmWorkerProcess pid=77``)."""
    proc = PROCESS.search(process)
    return (f"{proc['name']} pid={proc['pid']}".strip() if proc else process) or None


def _mean_stages(waiting: list[_Stages]) -> dict[str, float]:
    """Mean of each timing over the stage-time lines printed in one V0 interval (ms)."""
    means = {}
    for name in STAGE_NAMES.values():
        seen = [stage.times[name] for stage in waiting if name in stage.times]
        if seen:
            means[name] = sum(seen) / len(seen)
    return means
