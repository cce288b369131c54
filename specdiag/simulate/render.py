"""Vectorised rendering of many small JSON records that differ only in their numbers.

Each record is laid out in a fixed-width byte matrix (one row per record): literal bytes are copied into their
columns, and each number is written digit by digit with one numpy pass per digit position; unused leading digit
cells hold a pad byte (NUL, which never occurs in the output) and are squeezed out at the end. This writes millions
of step records per second where per-value string formatting would manage a few hundred thousand.
"""

from __future__ import annotations

from dataclasses import dataclass

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


Part = bytes | Int | Fixed | Tail


def _digits(rows: np.ndarray, values: np.ndarray, zero_pad: bool) -> None:
    """Write values into rows of shape (width, n), most significant digit first; leading zeros become PAD
    unless zero_pad."""
    v = values.astype(np.int32) if values.size == 0 or values.max() < 2**31 else values.astype(np.int64)
    width = rows.shape[0]
    for j in range(width - 1, -1, -1):  # least significant digit first: one divmod pass per digit
        v, digit = np.divmod(v, 10)
        rows[j] = digit + ord("0")
    if not zero_pad and width > 1:
        leading = np.logical_and.accumulate(rows[:-1] == ord("0"), axis=0)
        rows[:-1][leading] = PAD


def _width(values: np.ndarray) -> int:
    return len(str(int(values.max(initial=0))))


CHUNK = 262144  # rows rendered at a time: bounds the byte matrix to a few tens of MB


def render(n: int, parts: list[Part]) -> tuple[bytes, np.ndarray]:
    """(concatenated records, byte length of each record) for n records laid out as parts."""
    if n <= CHUNK:
        return _render(n, parts)
    out, lengths = [], []
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        data, length = _render(hi - lo, [_slice(p, lo, hi) for p in parts])
        out.append(data)
        lengths.append(length)
    return b"".join(out), np.concatenate(lengths)


def _slice(part: Part, lo: int, hi: int) -> Part:
    if isinstance(part, Int):
        return Int(part.values[lo:hi], part.width, part.zero_pad)
    if isinstance(part, Fixed):
        return Fixed(part.values[lo:hi], part.decimals)
    if isinstance(part, Tail):
        return Tail(part.options, part.choice[lo:hi])
    return part


def _render(n: int, parts: list[Part]) -> tuple[bytes, np.ndarray]:
    widths: list[int] = []
    scaled: list[np.ndarray | None] = []
    for part in parts:
        values: np.ndarray | None = None
        if isinstance(part, bytes):
            w = len(part)
        elif isinstance(part, Tail):
            w = max(len(o) for o in part.options)
        elif isinstance(part, Fixed):
            values = np.rint(np.asarray(part.values, dtype=float) * 10**part.decimals).astype(np.int64)
            w = _width(values // 10**part.decimals) + 1 + part.decimals
        else:
            values = np.asarray(part.values).astype(np.int64)
            w = max(part.width, _width(values))
        if values is not None and values.size and values.min() < 0:
            raise ValueError("render: negative value")
        widths.append(w)
        scaled.append(values)
    mat = np.full((sum(widths), n), PAD, dtype=np.uint8)  # transposed: each column cell is a contiguous row
    col = 0
    for part, w, values in zip(parts, widths, scaled, strict=True):
        rows = mat[col : col + w]
        if isinstance(part, bytes):
            rows[:] = np.frombuffer(part, dtype=np.uint8)[:, None]
        elif isinstance(part, Tail):
            table = np.full((w, len(part.options)), PAD, dtype=np.uint8)
            for i, option in enumerate(part.options):
                table[: len(option), i] = np.frombuffer(option, dtype=np.uint8)
            rows[:] = table[:, part.choice]
        elif isinstance(part, Fixed):
            assert values is not None
            unit = 10**part.decimals
            _digits(rows[: w - 1 - part.decimals], values // unit, False)
            rows[w - 1 - part.decimals] = ord(".")
            _digits(rows[w - part.decimals :], values % unit, True)
        else:
            assert values is not None
            _digits(rows, values, part.zero_pad)
        col += w
    flat = np.ascontiguousarray(mat.T)
    keep = flat != PAD
    return flat[keep].tobytes(), np.count_nonzero(keep, axis=1)
