"""Vectorised rendering of many small JSON records that differ only in their numbers.

Each record is laid out in a fixed-width byte matrix (one row per record, a few thousand rows at a time so that the
matrix stays in cache): a template row holds the literal bytes, and each number is written digit by digit with one
numpy pass per digit position; unused leading digit cells hold a pad byte (NUL, which never occurs in the output)
and are squeezed out at the end. This writes millions
of step records per second where per-value string formatting would manage a few hundred thousand.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

PAD = 0


@dataclass
class Int:
    """A non-negative integer; zero_pad=True keeps `width` digits (for fixed-width ids)."""

    values: np.ndarray
    width: int = 0  # 0: as many digits as the largest value needs
    zero_pad: bool = False


@dataclass
class Fixed:
    """A non-negative number printed with `decimals` digits after the point (e.g. ms to the microsecond)."""

    values: np.ndarray
    decimals: int = 3


@dataclass
class Tail:
    """A per-row literal chosen from a few options: options[choice[row]] (e.g. `,` or `]}\\n`)."""

    options: tuple[bytes, ...]
    choice: np.ndarray


@dataclass
class Rows:
    """Per-record bytes copied from rows of a pre-rendered table (PAD where unused): table[index[record]]."""

    table: np.ndarray  # (m, width) uint8
    index: np.ndarray


Part = bytes | Int | Fixed | Tail | Rows


# PAIRS[v] = the two ASCII digits of v, for v = 0..99: numbers are written two digits per numpy pass
PAIRS = np.array([[ord(str(v // 10)), ord(str(v % 10))] for v in range(100)], dtype=np.uint8)


def _digits(mat: np.ndarray, col: int, width: int, values: np.ndarray, zero_pad: bool) -> None:
    """Write values as decimal digits into mat[:, col:col + width]; leading zeros become PAD unless zero_pad."""
    v = values.astype(np.int32) if values.size == 0 or values.max() < 2**31 else values.astype(np.int64)
    j = width
    while j >= 2:  # least significant pair first
        v, pair = np.divmod(v, 100)
        mat[:, col + j - 2 : col + j] = PAIRS[pair]
        j -= 2
    if j == 1:
        mat[:, col] = v % 10 + ord("0")
    if not zero_pad and width > 1:
        lead = mat[:, col : col + width - 1]
        lead[np.logical_and.accumulate(lead == ord("0"), axis=1)] = PAD


def _width(values: np.ndarray) -> int:
    return len(str(int(values.max(initial=0))))


CHUNK = 8192  # rows rendered at a time: the byte matrix (~1 MB) stays in cache


def render(n: int, parts: list[Part]) -> tuple[bytes, np.ndarray]:
    """(concatenated records, byte length of each record) for n records laid out as parts."""
    out, lengths = [], []
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        data, length = _render(hi - lo, [_slice(p, lo, hi) for p in parts])
        out.append(data)
        lengths.append(length)
    return b"".join(out), np.concatenate(lengths) if lengths else np.zeros(0, np.int64)


def _slice(part: Part, lo: int, hi: int) -> Part:
    if isinstance(part, Int):
        return Int(part.values[lo:hi], part.width, part.zero_pad)
    if isinstance(part, Fixed):
        return Fixed(part.values[lo:hi], part.decimals)
    if isinstance(part, Tail):
        return Tail(part.options, part.choice[lo:hi])
    if isinstance(part, Rows):
        return Rows(part.table, part.index[lo:hi])
    return part


def render_table(values: np.ndarray, width: int = 0, zero_pad: bool = False) -> np.ndarray:
    """(len(values), width) bytes of the integers, for `Rows` parts that repeat them in many records."""
    return _matrix(len(values), [Int(values, width, zero_pad)], use_tables=False)


TABLE_LIMIT = 1 << 20  # numbers below this many units are copied from a pre-formatted table


@lru_cache(maxsize=16)
def _table(size: int, decimals: int) -> np.ndarray:
    """(size, width) bytes: the numbers 0..size-1 (in units of 10^-decimals) formatted, PAD where no digit."""
    values = np.arange(size, dtype=np.int64)
    part: Part = Fixed(values / 10**decimals, decimals) if decimals else Int(values)
    table = _matrix(size, [part], use_tables=False)
    table.flags.writeable = False
    return table


def _render(n: int, parts: list[Part]) -> tuple[bytes, np.ndarray]:
    mat = _matrix(n, parts)
    keep = mat != PAD
    return mat[keep].tobytes(), np.count_nonzero(keep, axis=1)


def _matrix(n: int, parts: list[Part], use_tables: bool = True) -> np.ndarray:
    """The (n, width) byte matrix of the records, PAD in unused cells."""
    widths: list[int] = []
    scaled: list[np.ndarray | None] = []
    tables: list[np.ndarray | None] = []
    for part in parts:
        values: np.ndarray | None = None
        table: np.ndarray | None = None
        if isinstance(part, bytes):
            w = len(part)
        elif isinstance(part, Tail):
            w = max(len(o) for o in part.options)
        elif isinstance(part, Rows):
            w = part.table.shape[1]
        elif isinstance(part, Fixed):
            values = np.rint(np.asarray(part.values, dtype=float) * 10**part.decimals).astype(np.int64)
            w = _width(values // 10**part.decimals) + 1 + part.decimals
        else:
            values = np.asarray(part.values).astype(np.int64)
            w = max(part.width, _width(values))
        if values is not None and values.size and values.min() < 0:
            raise ValueError("render: negative value")
        if use_tables and values is not None and n > 4096 and not (isinstance(part, Int) and part.zero_pad):
            if (
                values.max() < TABLE_LIMIT
            ):  # many records: one gather from pre-formatted numbers, not a pass a digit
                decimals = part.decimals if isinstance(part, Fixed) else 0
                table = _table(max(1024, 1 << int(values.max()).bit_length()), decimals)
                w = table.shape[1]  # may be wider than needed: unused cells are PAD
        widths.append(w)
        scaled.append(values)
        tables.append(table)
    template = np.full(sum(widths), PAD, dtype=np.uint8)
    col = 0
    for part, w in zip(parts, widths, strict=True):
        if isinstance(part, bytes):
            template[col : col + w] = np.frombuffer(part, dtype=np.uint8)
        elif isinstance(part, Fixed):
            template[col + w - 1 - part.decimals] = ord(".")
        col += w
    mat = np.empty((n, len(template)), dtype=np.uint8)
    mat[:] = template
    col = 0
    for part, w, values, table in zip(parts, widths, scaled, tables, strict=True):
        if isinstance(part, Tail):
            options = np.full((len(part.options), w), PAD, dtype=np.uint8)
            for i, option in enumerate(part.options):
                options[i, : len(option)] = np.frombuffer(option, dtype=np.uint8)
            mat[:, col : col + w] = options[part.choice]
        elif isinstance(part, Rows):
            mat[:, col : col + w] = part.table[part.index]
        elif table is not None:
            assert values is not None
            mat[:, col : col + w] = table[values]
        elif values is not None:
            _write_number(mat, col, w, part, values)
        col += w
    return mat


def _write_number(mat: np.ndarray, col: int, w: int, part: Part, values: np.ndarray) -> None:
    if isinstance(part, Fixed):
        unit = 10**part.decimals
        _digits(mat, col, w - 1 - part.decimals, values // unit, False)
        _digits(mat, col + w - part.decimals, part.decimals, values % unit, True)
    elif isinstance(part, Int):
        _digits(mat, col, w, values, part.zero_pad)
