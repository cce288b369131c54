"""Shared checks for the JSON-lines engine formats: decoding a line, reading counts, epoch/ISO timestamps."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

from specdiag.formats import Line, Parsed, Reject

INT64_MAX = 2**63 - 1  # the store's counts are BIGINT
INT32_MAX = 2**31 - 1  # and tau an INTEGER


class Bad(ValueError):
    """A record that cannot be stored: carries the rejects reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def load(line: Line) -> Any:
    """The line's JSON value; raises Bad("invalid_utf8" | "invalid_json")."""
    try:
        text = line.raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Bad("invalid_utf8", "not UTF-8") from exc
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, or an integer of more than 4300 digits
        raise Bad("invalid_json", f"invalid JSON: {exc}") from exc


def reject(line: Line, bad: Bad) -> Reject:
    return Reject(line.number, line.byte_offset, bad.reason, str(bad), line.raw)


def count(record: dict[str, Any], name: str, most: int = INT64_MAX) -> int | None:
    """An optional non-negative integer field up to ``most`` (JSON numbers like 12.0 accepted)."""
    value = record.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Bad("wrong_type", f"{name} must be a number, got {type(value).__name__}")
    # an int is compared as an int: math.isfinite on one of 400 digits raises OverflowError
    if (isinstance(value, float) and not math.isfinite(value)) or value < 0 or value != int(value):
        raise Bad("out_of_range", f"{name} must be a non-negative integer, got {_short(value)}")
    if value > most:
        raise Bad("out_of_range", f"{name} {_short(value)} is larger than {most}")
    return int(value)


def _short(value: float) -> str:
    text = str(value)
    return text if len(text) <= 30 else f"{text[:12]}... ({len(text)} digits)"


def ratio(record: dict[str, Any], name: str) -> float | None:
    value = record.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Bad("wrong_type", f"{name} must be a number, got {type(value).__name__}")
    try:
        as_float = float(value)
    except OverflowError:  # an integer too large for a double: no usable number, as inf
        return None
    return as_float if math.isfinite(as_float) else None


def timestamp(value: Any, name: str) -> datetime:
    """Epoch seconds (or ms when > 1e11) or an ISO 8601 string, as naive UTC."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = value / 1000 if value > 1e11 else value
            return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)
        except (OverflowError, OSError, ValueError) as exc:  # also nan, inf and integers past a double
            raise Bad("bad_timestamp", f"{name} {_short(value)} is out of range") from exc
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed
        except (
            ValueError,
            OverflowError,
        ) as exc:  # OverflowError: an offset that moves it past year 9999 or 1
            raise Bad("bad_timestamp", f"{name} {value!r} is not an ISO 8601 time in range") from exc
    raise Bad("bad_timestamp", f"{name} is missing or not a time")


def histogram(value: Any, name: str) -> list[int] | None:
    """`[n0, n1, ...]` or `{"0": n0, "1": n1}`: steps with exactly i accepted draft tokens."""
    if value is None:
        return None
    if isinstance(value, dict):
        try:
            positions = {int(k): v for k, v in value.items()}
        except ValueError as exc:
            raise Bad("wrong_type", f"{name} keys must be integers") from exc
        if any(not 0 <= k < 4096 for k in positions):
            raise Bad("out_of_range", f"{name} keys must be accepted counts 0..4095")
        value = [positions.get(i, 0) for i in range(max(positions, default=-1) + 1)]
    if not isinstance(value, list):
        raise Bad("wrong_type", f"{name} must be a list or an object")
    if len(value) > 4096:
        raise Bad("out_of_range", f"{name} has {len(value)} entries (more than 4096 draft positions)")
    return [count({name: v}, name) or 0 for v in value]


def reached(hist: list[int]) -> list[int]:
    """accepted_per_position[i] = steps whose accepted count reached i+1 = sum of hist[j] for j > i."""
    tail = list(accumulate(reversed(hist)))[::-1]  # tail[i] = sum of hist[i:]
    return tail[1:]


def accepted_from(hist: list[int]) -> int:
    """Accepted draft tokens in a histogram: sum of i * hist[i]."""
    return sum(i * n for i, n in enumerate(hist))


REQUEST_COLUMNS = (
    "request_id", "source", "ts", "deployment", "target_model", "draft_model", "tau", "temperature", "top_p",
    "task", "acceptance", "prompt", "output", "prompt_hash", "prompt_chars", "output_chars", "prompt_tokens",
    "output_tokens", "latency_ms", "ttft_ms", "batch_size", "quality", "shadow_match", "verify_steps", "drafted",
    "accepted", "draft_ms", "verify_ms", "accepted_per_position", "acceptance_histogram", "extra", "line",
)  # fmt: skip


def request_row(**values: Any) -> dict[str, Any]:
    """A complete requests row (file_id left to ingest); extra (a dict) becomes JSON text."""
    unknown = set(values) - set(REQUEST_COLUMNS)
    if unknown:
        raise KeyError(f"not a requests column: {sorted(unknown)}")
    row = {name: values.get(name) for name in REQUEST_COLUMNS}
    if isinstance(row["extra"], dict):
        row["extra"] = json.dumps(row["extra"], sort_keys=True, default=str) if row["extra"] else None
    return row


def check_counts(
    drafted: int | None, accepted: int | None, steps: int | None, hist: list[int] | None
) -> None:
    if drafted is not None and accepted is not None and accepted > drafted:
        raise Bad("accepted_gt_drafted", f"accepted {accepted} > drafted {drafted}")
    if hist is not None and steps is not None and sum(hist) != steps:
        raise Bad("out_of_range", f"acceptance histogram sums to {sum(hist)} steps, not {steps}")
    if hist is not None and accepted is not None and accepted_from(hist) != accepted:
        raise Bad(
            "out_of_range", f"acceptance histogram holds {accepted_from(hist)} accepted, not {accepted}"
        )


def parse_records(
    lines: Iterable[Line],
    name: str,
    pick: Callable[[Any], dict[str, Any] | None],
    to_row: Callable[[Any, dict[str, Any], int], dict[str, Any]],
) -> Parsed:
    """One JSON record a line: ``pick`` returns the speculative-decoding part of a record (None: an other line),
    ``to_row`` turns (record, part, line number) into a requests row. Text that is not JSON at all is an other line;
    a line that opens an object but does not parse, or a record that fails a check, is rejected."""
    out = Parsed(format=name)
    for line in lines:
        if not line.raw.strip():
            out.blank += 1
            continue
        try:
            record = load(line)
            part = pick(record)
            if part is None:
                out.other_lines += 1
                continue
            out.requests.append(to_row(record, part, line.number))
            out.used_lines += 1
        except Bad as bad:
            if bad.reason == "invalid_json" and not line.raw.lstrip().startswith(b"{"):
                out.other_lines += 1
            else:
                out.rejects.append(reject(line, bad))
    return out
