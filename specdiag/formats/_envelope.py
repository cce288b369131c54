"""Line envelopes shared by the engine log parsers: ANSI codes, process prefixes, timestamps, numbers.

Engine logs carry local wall-clock time. The store keeps naive UTC, so a time is converted from ``ctx.tz`` (an
IANA zone name) when one is given and taken as UTC otherwise (see docs/engine-formats.md).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from specdiag.errors import InputError
from specdiag.formats import ParseContext

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# vLLM: `[<user prefix>][(<proc> pid=<N>) ]<LEVEL> <MM-DD> <HH:MM:SS>[.fff] [<file>:<line>] <message>`; before
# 2025-02 the `[` before the file name was missing.
VLLM_ENVELOPE = re.compile(
    r"^(?P<prefix>.*?)(?P<level>DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL) +"
    r"(?P<month>\d\d)-(?P<day>\d\d) (?P<time>\d\d:\d\d:\d\d)(?:[.,](?P<frac>\d{1,6}))? +"
    r"\[?(?P<file>[\w.\-/]+):(?P<lineno>\d+)\] ?(?P<message>.*)$"
)
PROCESS = re.compile(r"\((?P<name>[^()]*?)\s*pid=(?P<pid>\d+)\)")

# SGLang: `[YYYY-MM-DD HH:MM:SS(.mmm)?( DPn)?( PPn)?( TPn)?( EPn)?] message`
SGLANG_ENVELOPE = re.compile(
    r"^\[(?P<date>\d{4}-\d\d-\d\d) (?P<time>\d\d:\d\d:\d\d)(?:[.,](?P<frac>\d{1,6}))?"
    r"(?P<ranks>(?: (?:DP|PP|TP|EP|ATTN_DP|MOE_DP)\d+)*)\] ?(?P<message>.*)$"
)
RANK = re.compile(r"(DP|PP|TP|EP|ATTN_DP|MOE_DP)(\d+)")

NUMBER = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$")


def decode(raw: bytes) -> str | None:
    """The line as text with ANSI colour codes removed, or None when it is not UTF-8."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return ANSI.sub("", text).rstrip("\r")


def number(text: str) -> float | None:
    """A printed number: `2.84`, `61.3%` (kept as printed, 61.3), `nan` or inf (None). Else ValueError."""
    value = text.strip().rstrip("%").strip()
    if value.lower() in ("nan", "-nan", "inf", "-inf"):
        return None
    if not NUMBER.match(value):
        raise ValueError(f"not a number: {text.strip()!r}")
    result = float(value)
    return result if math.isfinite(result) else None  # 1e400 overflows to inf: no usable number


def count(text: str) -> int | None:
    """A printed count such as `5913 tokens` or `5913`; None for nan. Raises ValueError for anything else."""
    value = text.strip()
    for unit in (" tokens", " reqs", " tokens/s"):
        value = value.removesuffix(unit)
    parsed = number(value)
    if parsed is None:
        return None
    if parsed != int(parsed) or parsed < 0:
        raise ValueError(f"not a count: {text.strip()!r}")
    if parsed > 2**63 - 1:  # the store's counts are BIGINT
        raise ValueError(f"count too large: {text.strip()[:40]!r}")
    return int(parsed)


FIELD_BREAK = re.compile(r",\s+(?=[A-Za-z#][\w #()/.\-]*?:\s)")


def fields(message: str) -> list[tuple[str, str]]:
    """Split `Name: value, Other name: v1, v2, ...` into (name, value) pairs.

    A field boundary is a `, ` followed by a name and a colon, so multi-valued fields (vLLM's per-position rates
    `0.792, 0.601, 0.447`) stay whole. Raises ValueError when a piece has no `name: value` shape.
    """
    pairs = []
    for piece in FIELD_BREAK.split(message.strip().rstrip(",.").strip()):
        name, sep, value = piece.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"expected `name: value`, got {piece!r}")
        pairs.append((name.strip(), value.strip().rstrip(",").strip()))
    return pairs


@dataclass
class Clock:
    """Turns printed local times into naive UTC, filling in the year for logs that print none (vLLM)."""

    ctx: ParseContext
    year: int | None = None
    last_month: int | None = None
    last_utc: datetime | None = None  # the previous time read: settles the repeated hour when clocks go back

    def __post_init__(self) -> None:
        self.zone = None
        if self.ctx.tz:
            try:
                self.zone = ZoneInfo(self.ctx.tz)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise InputError(f"{self.ctx.path}: unknown time zone {self.ctx.tz!r}") from exc

    def to_utc(self, local: datetime) -> datetime:
        if self.zone is None:
            return local
        try:
            first, second = (
                local.replace(tzinfo=self.zone, fold=fold).astimezone(UTC).replace(tzinfo=None)
                for fold in (0, 1)
            )
        except OverflowError as exc:  # 9999-12-31 west of UTC, 0001-01-01 east of it
            raise ValueError(f"{local} in {self.ctx.tz} is outside the years 1-9999 in UTC") from exc
        utc = first
        if first < second and self.last_utc is not None:  # first > second: a time the clocks skipped
            # the hour repeated when the clocks went back: take the occurrence nearer the previous line's
            utc = min((first, second), key=lambda t: abs(t - self.last_utc))  # type: ignore[operator]
        self.last_utc = utc
        return utc

    def without_year(self, month: int, day: int, hms: str, frac: str | None, notes: list[str]) -> datetime:
        """vLLM prints `MM-DD HH:MM:SS`: the year comes from ctx.year, else the file's mtime, else today.

        With the mtime, a date later than the mtime belongs to the year before (a log from December read in
        January); inside a file, the month going down (12 -> 1) moves to the next year.
        """
        if self.year is None:
            if self.ctx.year is not None:
                self.year = self.ctx.year
            else:
                anchor = self.ctx.mtime or datetime.now(UTC).replace(tzinfo=None)
                if self.zone is not None:  # the mtime is UTC, the printed dates are local
                    anchor = anchor.replace(tzinfo=UTC).astimezone(self.zone).replace(tzinfo=None)
                self.year = anchor.year
                if (month, day) > (anchor.month, anchor.day):
                    self.year -= 1
                source = "the file's modification time" if self.ctx.mtime else "today's date"
                notes.append(f"timestamps have no year; took {self.year} from {source}")
        elif self.last_month is not None and month < self.last_month - 6:
            self.year += 1
        self.last_month = month
        return self.to_utc(_local(self.year, month, day, hms, frac))

    def with_year(self, date: str, hms: str, frac: str | None) -> datetime:
        year, month, day = (int(part) for part in date.split("-"))
        return self.to_utc(_local(year, month, day, hms, frac))


def _local(year: int, month: int, day: int, hms: str, frac: str | None) -> datetime:
    """`HH:MM:SS` (matched as digits by the envelope) and an optional fraction; ValueError for an impossible date."""
    hour, minute, second = (int(part) for part in hms.split(":"))
    return datetime(year, month, day, hour, minute, second) + _fraction(frac)


def _fraction(frac: str | None) -> timedelta:
    return timedelta(microseconds=int(frac.ljust(6, "0"))) if frac else timedelta(0)


INDEX = re.compile(r"^[0-9]{1,6}$")


def index(text: str | None) -> int | None:
    """A printed engine / position index (`000` -> 0); None unless 1 to 6 ASCII digits."""
    return int(text) if text is not None and INDEX.match(text) else None


def deployment_for(ctx: ParseContext, label: str | None = None) -> str:
    """--deployment, else the engine's model_name label, else the file name without its suffixes."""
    if ctx.deployment:
        return ctx.deployment
    if label:
        return label
    name = ctx.path.replace("\\", "/").rsplit("/", 1)[-1]
    return name.split(".", 1)[0] or name or "-"


def looks_blank(raw: bytes) -> bool:
    return not raw.strip()
