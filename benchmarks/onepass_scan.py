"""Line accounting for the one-pass DuckDB prototype (``onepass_reader``): what a file's bytes must look like for
its rows to be provable. A feasibility prototype measured by ``ingest_onepass.py``; ``specdiag ingest`` does not use it.

DuckDB's JSON reader is more lenient than the v1 format (Python's ``json``): it accepts trailing commas, ``NaN`` and
``Infinity``, form feed and vertical tab as whitespace, and it skips blank lines without saying where they were.
This scan reads the decompressed bytes once (with the content fingerprint) and says whether every line is either
blank or starts with ``{`` and ends with ``}`` with none of those lenient forms anywhere; then, since a JSON string
cannot hold a raw newline, each such line is at least one object, and "DuckDB read as many rows as there are
non-blank lines" proves each line became exactly one row, the n-th row being the n-th non-blank line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from specdiag.ingest_read import BLOCK_BYTES, Source, line_bounds, open_decompressed

MAX_BLANK = 8  # a blank line is at most this long (as in ingest_trace.parse_block: longer ones are rejects)
_BLANK = np.frombuffer(b" \t\r", dtype=np.uint8)
# Accepted by DuckDB's reader, refused by the v1 format: a comma before a closing bracket, form feed and vertical
# tab (outside strings; inside one they are control characters both refuse). Found anywhere, text included, they
# only send the file back to the block path.
_TRAILING_COMMA = re.compile(rb",[ \t\r]*[\]}]")


@dataclass
class Scan:
    """A file's lines as the scan saw them; ``provable`` is False when the DuckDB reader cannot be trusted."""

    lines: int = 0
    blank_lines: list[int] = field(default_factory=list)  # 1-based numbers of the blank lines
    provable: bool = True
    why: str = ""  # the first reason it is not provable

    @property
    def nonblank(self) -> int:
        return self.lines - len(self.blank_lines)

    def refuse(self, why: str) -> None:
        if self.provable:
            self.provable, self.why = False, why


def _lenient(data: bytes) -> bool:
    """A trailing comma, form feed or vertical tab anywhere (numpy looks at the byte before each closing bracket;
    the regex runs only when one is whitespace)."""
    arr = np.frombuffer(data, dtype=np.uint8)
    if data.find(b"\x0b") >= 0 or data.find(b"\x0c") >= 0:
        return True
    close = np.flatnonzero((arr == ord("]")) | (arr == ord("}")))
    before = arr[close[close > 0] - 1]
    if (before == ord(",")).any():
        return True
    return bool(np.isin(before, _BLANK).any()) and _TRAILING_COMMA.search(data) is not None


def _all_objects(data: bytes, n_lines: int) -> bool:
    """Every line of ``data`` is "{...}", none blank: each newline but a final one sits in "}\n{" (one count)."""
    end = len(data) - data.endswith(b"\n")
    return (
        data.startswith(b"{") and data.endswith(b"}", 0, end) and data.count(b"}\n{", 0, end) == n_lines - 1
    )


def _check_lines(data: bytes, first_line: int, scan: Scan) -> None:
    """Line by line (numpy on line bounds): blank lines, and lines that are not "{...}" (CRLF endings allowed)."""
    starts, ends = line_bounds(data)
    arr = np.frombuffer(data, dtype=np.uint8)
    short = np.flatnonzero(ends - starts <= MAX_BLANK)
    blank = [int(i) for i in short if np.isin(arr[starts[i] : ends[i]], _BLANK).all()]
    scan.blank_lines.extend(first_line + i for i in blank)
    keep = np.ones(len(starts), dtype=bool)
    keep[blank] = False
    starts, ends = starts[keep], ends[keep]
    last = ends - 1
    last = np.where(arr[last] == 13, last - 1, last)  # the byte before a final "\r"
    if ((last <= starts) | (arr[starts] != ord("{")) | (arr[np.maximum(last, 0)] != ord("}"))).any():
        scan.refuse("a line does not start with { and end with }")


def read_chunks(stream: BinaryIO, source: Source, fingerprint: bool = True) -> Iterator[bytes]:
    """Whole lines, about BLOCK_BYTES at a time (the last may lack its newline); updates the fingerprint.

    ``ingest_read.read_blocks`` without the per-line bounds, which this scan needs only for files with blank lines.
    """
    carry = b""
    while True:
        chunk = stream.read(BLOCK_BYTES)
        if chunk and fingerprint:
            source.fingerprint.update(chunk)
        data = carry + chunk if carry else chunk
        if chunk:
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # one line longer than a block: keep reading
                carry = data
                continue
            data, carry = data[:cut], data[cut:]
        else:
            carry = b""
        if data:
            yield data
        if not chunk:
            return


def scan_file(
    source: Source, on_progress: Callable[[int], None] | None = None, fingerprint: bool = True
) -> Scan:
    """Read ``source`` once: line counts, blank lines, whether the DuckDB reader can be trusted with it.

    Updates ``source.compression`` and, with ``fingerprint``, ``source.fingerprint`` (SHA-256 of the decompressed
    content).
    """
    scan = Scan()
    stream, counting = open_decompressed(source)
    try:
        for data in read_chunks(stream, source, fingerprint=fingerprint):
            n = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
            if not _all_objects(data, n):
                _check_lines(data, scan.lines + 1, scan)
            scan.lines += n
            if scan.provable and _lenient(data):
                scan.refuse("a trailing comma, form feed or vertical tab")
            if on_progress is not None:
                on_progress(counting.count)
    finally:
        stream.close()
    return scan
