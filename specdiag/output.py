"""stdout is data, stderr is messages."""

from __future__ import annotations

import json
import math
import os
import sys
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from rich.console import Console
from rich.text import Text

# Messages, progress bars and human tables for the terminal go to stderr unless they *are* the requested data.
err_console = Console(stderr=True)


def _out_console() -> Console:
    """Tables on stdout. Piped or redirected, stdout has no width: rich would assume 80 columns and squeeze the
    summary column of a wide table to nothing, so use $COLUMNS when set, else 160."""
    console = Console()
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        return Console(width=160)
    return console


out_console = _out_console()


def _default(value: Any) -> Any:
    """JSON for what DuckDB and numpy return beyond JSON's own types (a DECIMAL, an INTERVAL, a BLOB, a UUID...)."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, UUID):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def clean_floats(value: Any) -> Any:
    """NaN and infinities are not JSON: map them to null, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_floats(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_floats(v) for v in value]
    return value


def dumps(payload: Any) -> str:
    return json.dumps(clean_floats(payload), default=_default, ensure_ascii=False, allow_nan=False)


def emit_json(payload: Any) -> None:
    """Print one JSON document on stdout."""
    sys.stdout.write(dumps(payload) + "\n")
    sys.stdout.flush()


# Control characters shown escaped: text from logs (names, prompts) must not move the cursor or recolour the terminal,
# nor reorder what follows it (the bidirectional controls: "\u202e" shows the rest of a line right to left).
_CONTROL = (
    {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
    | {c: f"\\u{c:04x}" for c in (0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))}
    | {9: "\\t", 10: "\\n", 13: "\\r"}
)


def plain(value: object) -> Text:
    """A table cell or line for the terminal from data: never read as rich markup, control characters escaped."""
    return Text(str(value).translate(_CONTROL))


def message(text: str, *, markup: bool = False) -> None:
    """A line on stderr; ``markup`` only for fixed text of our own (names in ``text`` may hold "[/]")."""
    if markup:
        err_console.print(text, highlight=False)
    else:
        err_console.print(plain(text), highlight=False, soft_wrap=True)
