"""Helpers for the engine-format tests: read a fixture as `Line`s and check the line accounting."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from specdiag.formats import Line, ParseContext, Parsed

FIXTURES = Path(__file__).parent / "fixtures" / "engines"


def lines_of(data: bytes) -> list[Line]:
    out, offset = [], 0
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if number > 1 or raw or len(data):
            out.append(Line(number, offset, raw))
        offset += len(raw) + 1
    if data.endswith(b"\n"):
        out.pop()  # no line after the final newline
    return out


def fixture(name: str) -> list[Line]:
    return lines_of((FIXTURES / name).read_bytes())


def head(name: str, n: int = 20) -> list[str]:
    return (FIXTURES / name).read_text(encoding="utf-8").splitlines()[:n]


def ctx(name: str, **kwargs: object) -> ParseContext:
    kwargs.setdefault("mtime", datetime(2026, 11, 1))
    return ParseContext(path=str(FIXTURES / name), **kwargs)  # type: ignore[arg-type]


def accounted(parsed: Parsed, lines: list[Line]) -> bool:
    """The contract's invariant (no duplicates at this level): every line counted exactly once."""
    return len(lines) == parsed.used_lines + parsed.blank + len(parsed.rejects) + parsed.other_lines
