"""SGLang server logs: `Decode batch` lines, printed every `--decode-log-interval` decode steps (default 40).

`[2026-07-20 10:11:12 TP0] Decode batch, #running-req: 24, #token: 18342, token usage: 0.09, accept len: 2.87,
accept rate: 0.62, cuda graph: True, gen throughput (token/s): 1843.52, #queue-req: 0`

SGLang prints averages only: `accept len` is a mean acceptance length (tokens per request per verify step, bonus
included), `accept rate` is (accept len - 1) / draft tokens per round since 2026-04 and included the bonus token
before. No token counts are printed, so windows carry MAL and rate with null verify_steps/drafted/accepted. Lines
without `accept len` come from servers without speculation and count as other lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from specdiag.formats import Line, ParseContext, Parsed, Reject
from specdiag.formats._envelope import (
    ANSI,
    RANK,
    SGLANG_ENVELOPE,
    Clock,
    decode,
    deployment_for,
    fields,
    number,
)
from specdiag.formats._windows import window

NAME = "sglang-log"
MARKER = "Decode batch"
BODY = re.compile(r"^Decode batch[.,]?\s*(?P<fields>.*)$")
RATE_EXCLUDES_BONUS = datetime(
    2026, 4, 1
)  # `accept rate` = (accept len - 1) / draft tokens from this release

NAMES = {
    "#running-req": "running_requests",
    "accept len": "printed_mean_acceptance_length",
    "accept rate": "printed_acceptance_rate",
    "gen throughput (token/s)": "throughput_tokens_s",
}


def detect(head: list[str]) -> bool:
    return any(SGLANG_ENVELOPE.match(ANSI.sub("", line).rstrip("\r\n")) for line in head if line.strip())


def parse(lines: Iterable[Line], ctx: ParseContext) -> Parsed:
    out = Parsed(format=NAME)
    clock = Clock(ctx)
    for line in lines:
        if not line.raw.strip():
            out.blank += 1
            continue
        text = decode(line.raw)
        if MARKER.encode() not in line.raw:
            out.other_lines += 1
            continue
        if text is None:
            out.rejects.append(Reject(line.number, line.byte_offset, "invalid_utf8", "not UTF-8", line.raw))
            continue
        try:
            row = _window(text, ctx, clock, line.number)
        except ValueError as exc:
            out.rejects.append(
                Reject(line.number, line.byte_offset, "unparsable_metrics", str(exc), line.raw)
            )
            continue
        if row is None:
            out.other_lines += 1
        else:
            out.windows.append(row)
            out.used_lines += 1
    return out


def _window(text: str, ctx: ParseContext, clock: Clock, line: int) -> dict[str, Any] | None:
    envelope = SGLANG_ENVELOPE.match(text)
    if envelope is None:
        raise ValueError("expected `[YYYY-MM-DD HH:MM:SS( TPn)...] Decode batch...`")
    body = BODY.match(envelope["message"])
    if body is None:
        if MARKER not in envelope["message"]:
            return None
        raise ValueError("`Decode batch` not at the start of the message")
    values = {name: value for name, value in fields(body["fields"])} if body["fields"].strip() else {}
    if "accept len" not in values or values["accept len"] in ("0", "0.0", "0.00"):
        return None  # a server without speculative decoding (some releases print `accept len: 0.00`)
    row: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in values.items():
        if name in NAMES:
            row[NAMES[name]] = number(value)
        else:
            extra[name] = _scalar(value)
    mal = row["printed_mean_acceptance_length"]
    if mal is not None and mal < 1.0:
        raise ValueError(f"accept len {mal} < 1 (it counts the bonus token)")
    ts = clock.with_year(envelope["date"], envelope["time"], envelope["frac"])
    ranks = dict(RANK.findall(envelope["ranks"]))
    if "printed_acceptance_rate" not in row:
        version = "accept-len"
    elif ts >= RATE_EXCLUDES_BONUS:
        version = "2026-04"
    else:
        version = "2025-10"  # accept rate included the bonus token
    return window(
        source=f"sglang-log/{version}",
        deployment=deployment_for(ctx),
        engine=ranks.get("DP"),
        instance=envelope["ranks"].strip() or None,
        end_ts=ts,
        extra=extra,
        line=line,
        **row,
    )


def _scalar(value: str) -> Any:
    try:
        return number(value)
    except ValueError:
        return value
