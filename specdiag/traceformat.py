"""Trace format v1: the fields, their types and ranges, and the line-level validator.

This module is the authority on what a valid line is (docs/trace-format.md is its prose). ``validate_line`` turns one
raw line into a :class:`Record` (normalised, ready to become rows) or a :class:`Invalid` carrying a reason from
``specdiag.rejects.REASONS``. The columnar fast path in ``specdiag.ingest_trace`` only ever accepts lines that this
validator would accept; anything it is unsure about is sent here.

Conventions: a JSON ``null`` is the same as an absent field; an int field takes JSON integers only (``3.0`` and
``true`` are wrong types); a number field takes integers or decimals; times become ``ts_us``, microseconds since the
Unix epoch, UTC.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
# epoch seconds must fall before 3000-01-01: a larger number is almost surely milliseconds
EPOCH_MAX_S = 32503680000

# Field kinds: "str", "int", "num" (int or decimal), "bool", "ts", "steps", list kinds "ints" and "probs".
# Ranges are (low, high, low_open): inclusive bounds unless low_open.
Range = tuple[float, float, bool]

REQUEST_FIELDS: dict[str, tuple[str, Range | None]] = {
    "event": ("str", None),
    "request_id": ("str", None),
    "ts": ("ts", None),
    "deployment": ("str", None),
    "target_model": ("str", None),
    "draft_model": ("str", None),
    "tau": ("int", (0, INT32_MAX, False)),
    "temperature": ("num", (0, math.inf, False)),
    "top_p": ("num", (0, 1, True)),
    "task": ("str", None),
    "acceptance": ("str", None),
    "prompt": ("str", None),
    "output": ("str", None),
    "prompt_tokens": ("int", (0, INT64_MAX, False)),
    "output_tokens": ("int", (0, INT64_MAX, False)),
    "latency_ms": ("num", (0, math.inf, False)),
    "ttft_ms": ("num", (0, math.inf, False)),
    "batch_size": ("int", (1, INT32_MAX, False)),
    "quality": ("num", (0, 1, False)),
    "shadow_match": ("bool", None),
    # totals a team may log instead of steps; ignored (recomputed) when the request has steps
    "verify_steps": ("int", (0, INT64_MAX, False)),
    "drafted": ("int", (0, INT64_MAX, False)),
    "accepted": ("int", (0, INT64_MAX, False)),
    "draft_ms": ("num", (0, math.inf, False)),
    "verify_ms": ("num", (0, math.inf, False)),
    "steps": ("steps", None),
}
REQUEST_REQUIRED = ("request_id", "ts", "deployment", "target_model", "draft_model", "tau")

STEP_FIELDS: dict[str, tuple[str, Range | None]] = {
    "step": ("int", (0, INT32_MAX, False)),
    "drafted": ("int", (0, INT32_MAX, False)),
    "accepted": ("int", (0, INT32_MAX, False)),
    "draft_ms": ("num", (0, math.inf, False)),
    "verify_ms": ("num", (0, math.inf, False)),
    "batch_size": ("int", (1, INT32_MAX, False)),
    "ts": ("ts", None),
    "draft_token_ids": ("ints", (0, INT32_MAX, False)),
    "draft_probs": ("probs", (0, 1, False)),
    "target_probs": ("probs", (0, 1, False)),
}
STEP_REQUIRED = ("step", "drafted", "accepted")
# a flat step line: {"event": "step", "request_id": ..., <step fields>}
FLAT_STEP_FIELDS: dict[str, tuple[str, Range | None]] = {
    "event": ("str", None),
    "request_id": ("str", None),
    **STEP_FIELDS,
}
FLAT_STEP_REQUIRED = ("request_id", *STEP_REQUIRED)

# The acceptance rules a record's ``acceptance`` may name, as engines spell them (compared by ``acceptance_rule``).
# Lossless rules keep the target's distribution: greedy matching, and the rejection rule of Leviathan et al. 2023
# section 2.3 / Chen et al. 2023 Alg. 2 (vLLM's ``rejection_sampler``). Typical acceptance (Cai et al. 2024, vLLM's
# ``typical_acceptance_sampler``) is lossy. "unknown" says nothing either way.
LOSSLESS_RULES = frozenset(
    {
        "strict",
        "rejection",
        "rejection_sampling",
        "rejection_sampler",
        "speculative_sampling",
        "exact",
        "greedy",
        "unknown",
    }
)
TYPICAL_RULES = frozenset({"typical", "typical_acceptance", "typical_acceptance_sampler"})


def acceptance_rule(name: str) -> str:
    """``name`` compared case-insensitively, with hyphens and spaces read as underscores (``Rejection-Sampler``)."""
    return re.sub(r"[\s-]+", "_", name.strip().lower())


# RFC 3339 date-time; the offset may be omitted (read as UTC) and the separator may be a space. Digits are ASCII
# [0-9], as RFC 3339 says: Python's (and Rust's) \d also matches other scripts' digits, an ECMA 262 \d (the schema's
# regex dialect) does not.
TS_PATTERN = (
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9])(\.[0-9]{1,9})?"
    r"([Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?$"
)
_TS_RE = re.compile(TS_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Invalid:
    reason: str  # a key of specdiag.rejects.REASONS
    detail: str


@dataclass
class Record:
    """A valid line, normalised: known fields (nulls dropped), ``ts_us``, ``extra`` as JSON text or None."""

    event: str  # "request" or "step"
    fields: dict[str, Any]
    steps: list[dict[str, Any]]  # nested steps, each normalised the same way (with "ts_us" and "extra")


class _Bad(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def parse_ts(value: Any, name: str = "ts") -> int:
    """RFC 3339 text or epoch seconds -> microseconds since the epoch (UTC). Raises _Bad(bad_timestamp)."""
    if isinstance(value, bool):
        raise _Bad("bad_timestamp", f"{name} is a boolean")
    if isinstance(value, int | float):
        if not (0 <= value < EPOCH_MAX_S and math.isfinite(value)):  # range first: a huge int has no float
            raise _Bad("bad_timestamp", f"{name} {value!r} is not epoch seconds in [0, {EPOCH_MAX_S})")
        return value * 1_000_000 if isinstance(value, int) else round(value * 1e6)
    if not isinstance(value, str):
        raise _Bad("bad_timestamp", f"{name} is neither text nor a number")
    m = _TS_RE.match(value)
    if m is None:
        raise _Bad("bad_timestamp", f"{name} {value[:40]!r} is not RFC 3339")
    y, mo, d, hh, mm, ss, frac, off = m.groups()
    try:
        micro = int((frac[1:] if frac else "0")[:6].ljust(6, "0"))
        t = datetime(int(y), int(mo), int(d), int(hh), int(mm), int(ss), micro, tzinfo=UTC)
    except ValueError as exc:
        raise _Bad("bad_timestamp", f"{name} {value[:40]!r}: {exc}") from None
    delta = t - _EPOCH
    us = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    if off and off not in ("Z", "z"):
        # in integers, not datetimes: an offset may carry 0001-01-01 or 9999-12-31 past datetime's range
        sign = 1 if off[0] == "+" else -1
        us -= sign * (int(off[1:3]) * 3600 + int(off[4:6]) * 60) * 1_000_000
    return us


def _check_value(name: str, kind: str, rng: Range | None, value: Any) -> Any:
    """Type and range of one field; returns the normalised value."""
    if kind == "str":
        if not isinstance(value, str):
            raise _Bad("wrong_type", f"{name} must be a string")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise _Bad("wrong_type", f"{name} must be true or false")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad("wrong_type", f"{name} must be an integer")
    elif kind == "num":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Bad("wrong_type", f"{name} must be a number")
    elif kind in ("ints", "probs"):
        if not isinstance(value, list):
            raise _Bad("wrong_type", f"{name} must be a list")
        item_kind = "int" if kind == "ints" else "num"
        return [_check_value(f"{name}[{i}]", item_kind, rng, v) for i, v in enumerate(value)]
    if rng is not None:
        low, high, low_open = rng
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an integer literal too large for a double (10**400)
            finite = False
        if not finite:  # a literal too large for a double (1e400) reads as infinity
            raise _Bad("out_of_range", f"{name} is too large to be a finite number")
        if value < low or value > high or (low_open and value == low):
            bounds = f"{'(' if low_open else '['}{low:g}, {high:g}]"
            raise _Bad("out_of_range", f"{name}={value!r} is outside {bounds}")
    return float(value) if kind == "num" else value


def _normalise(
    obj: dict[str, Any], fields: dict[str, tuple[str, Range | None]], required: tuple[str, ...], what: str
) -> dict[str, Any]:
    for name in required:
        if obj.get(name) is None:
            raise _Bad("missing_field", f"{what}{name} is missing")
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in obj.items():
        if value is None:
            continue
        spec = fields.get(name)
        if spec is None:
            extra[name] = value
            continue
        kind, rng = spec
        if kind == "ts":
            out["ts_us"] = parse_ts(value, f"{what}{name}")
        elif kind == "steps":
            continue  # handled by the caller
        else:
            out[name] = _check_value(f"{what}{name}", kind, rng, value)
    for name in ("request_id", "deployment"):
        if out.get(name) == "":
            raise _Bad("missing_field", f"{what}{name} is empty")
    if out.get("accepted", 0) > out.get("drafted", math.inf):
        raise _Bad("accepted_gt_drafted", f"{what}accepted={out['accepted']} > drafted={out['drafted']}")
    try:  # as the fast path writes it
        out["extra"] = (
            json.dumps(extra, ensure_ascii=False, separators=(",", ":"), allow_nan=False) if extra else None
        )
    except ValueError:  # a literal too large for a double (1e400) has no JSON text to keep
        raise _Bad(
            "out_of_range", f"{what}a field outside the format is too large to be a finite number"
        ) from None
    return out


def _normalise_steps(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _Bad("wrong_type", "steps must be a list")
    steps: list[dict[str, Any]] = []
    seen: set[int] = set()
    for i, item in enumerate(value):
        try:
            if not isinstance(item, dict):
                raise _Bad("wrong_type", "a step must be an object")
            step = _normalise(item, STEP_FIELDS, STEP_REQUIRED, "")
        except _Bad as bad:
            raise _Bad("bad_step", f"steps[{i}]: {bad.reason}: {bad.detail}") from None
        if step["step"] in seen:
            raise _Bad("duplicate_step", f"steps[{i}]: step {step['step']} appears twice")
        seen.add(step["step"])
        steps.append(step)
    return steps


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_text(value: Any) -> None:
    """Strings must be encodable as UTF-8 (JSON escapes can smuggle in lone surrogates)."""
    if isinstance(value, str):
        value.encode("utf-8")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(k)
            _check_text(v)
    elif isinstance(value, list):
        for v in value:
            _check_text(v)


# Arrays and objects nested in one another deeper than this (serde_json's default limit) make a line invalid_json:
# the readers behind the fast path crash on deep nesting (polars near 800 levels, pyarrow's parser near 10,000).
MAX_DEPTH = 128


def nesting_depth(raw: bytes) -> int:
    """How deep arrays and objects nest in one JSON line (brackets inside strings do not count); 1 for ``{}``.

    Linear numpy passes: a quote opens or closes a string unless an odd run of backslashes precedes it.
    """
    a = np.frombuffer(raw, dtype=np.uint8)
    outside = np.ones(len(a), dtype=bool)
    quotes = np.flatnonzero(a == 34)
    if len(quotes):
        not_backslash = np.where(a != 92, np.arange(len(a)), -1)
        last = np.maximum.accumulate(not_backslash)  # the last byte at or before i that is not a backslash
        before = np.where(quotes > 0, last[quotes - 1], -1)
        real = quotes[((quotes - 1 - before) % 2) == 0]
        toggles = np.zeros(len(a) + 1, dtype=np.int8)
        toggles[real] = 1
        # inside a string from its opening quote up to its closing one
        outside = (np.cumsum(toggles[:-1]) % 2) == 0
    step = np.zeros(len(a), dtype=np.int32)
    step[(a == 91) | (a == 123)] = 1
    step[(a == 93) | (a == 125)] = -1
    depth = np.cumsum(np.where(outside, step, 0))
    return int(depth.max()) if len(depth) else 0


def too_deep(raw: bytes) -> bool:
    """Whether a line nests deeper than MAX_DEPTH (counted only when it has that many opening brackets at all)."""
    return raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and nesting_depth(raw) > MAX_DEPTH


_JSON_TYPE = {
    type(None): "null",
    bool: "boolean",
    int: "number",
    float: "number",
    str: "string",
    list: "array",
}


def validate_line(raw: bytes) -> Record | Invalid:
    """One non-blank line of a trace file -> a normalised Record, or Invalid(reason, detail)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Invalid("invalid_utf8", f"byte {exc.start}: {exc.reason}")
    if too_deep(raw):
        return Invalid("invalid_json", f"arrays and objects nest deeper than {MAX_DEPTH} levels")
    try:
        obj = json.loads(text, parse_constant=_no_constants)
        _check_text(obj)
    except UnicodeEncodeError:
        return Invalid("invalid_utf8", "a string escapes a lone surrogate")
    except ValueError as exc:
        return Invalid("invalid_json", str(exc).splitlines()[0][:200])
    if not isinstance(obj, dict):
        return Invalid(
            "not_object", f"the line is a JSON {_JSON_TYPE.get(type(obj), 'value')}, not an object"
        )
    try:
        event = obj.get("event")
        if event is None:
            event = "request"
        elif not isinstance(event, str):
            raise _Bad("wrong_type", "event must be a string")
        if event == "request":
            fields = _normalise(obj, REQUEST_FIELDS, REQUEST_REQUIRED, "")
            steps = _normalise_steps(obj["steps"]) if obj.get("steps") is not None else []
            return Record("request", fields, steps)
        if event == "step":
            return Record("step", _normalise(obj, FLAT_STEP_FIELDS, FLAT_STEP_REQUIRED, ""), [])
        raise _Bad("unknown_event", f"event {event[:40]!r} is neither 'request' nor 'step'")
    except _Bad as bad:
        return Invalid(bad.reason, bad.detail)
