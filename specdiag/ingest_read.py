"""Reading input streams: compression sniffed from magic bytes, blocks of whole lines, the content fingerprint.

A block is a few tens of MB of decompressed bytes cut at a newline, so memory stays bounded whatever the input size
(a single line longer than a block makes that block longer, never truncated). The fingerprint is the SHA-256 of
the decompressed content, computed as the blocks stream by.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import zstandard

from specdiag.errors import InputError

BLOCK_BYTES = 16 * 1024 * 1024  # two blocks in flight (one parsed ahead); smaller blocks lower peak memory
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark, which Windows tools write: skipped at the start of an input
STDIN = "-"


class TruncatedInput(Exception):
    """The compressed stream ends early or is corrupt (after the lines already yielded)."""


@dataclass
class Block:
    data: bytes  # whole lines; the last one may lack its newline only at the end of the stream
    first_line: int  # 1-based number of the first line
    byte_offset: int  # of data[0] in the decompressed stream
    starts: np.ndarray  # int64 offsets of each line start within data
    ends: np.ndarray  # int64 offsets of each line end (exclusive, newline excluded)

    @property
    def n_lines(self) -> int:
        return len(self.starts)

    def line(self, i: int) -> bytes:
        return self.data[self.starts[i] : self.ends[i]]


@dataclass
class Source:
    """One input: a path or stdin, opened lazily; ``compressed_read`` tracks progress in on-disk bytes."""

    path: str  # as the user gave it, "-" for stdin
    size: int | None = None  # on-disk bytes when known
    fingerprint: hashlib._Hash = field(default_factory=hashlib.sha256)
    compression: str = "none"

    @property
    def label(self) -> str:
        return "<stdin>" if self.path == STDIN else self.path


def expand_paths(paths: list[str], empty: list[str] | None = None) -> list[str]:
    """Files as given, folders recursively (sorted, hidden files skipped), '-' for stdin. Missing -> InputError.

    ``empty`` collects the folders that hold no file to read.
    """
    out: list[str] = []
    for p in paths:
        if p == STDIN:
            out.append(p)
            continue
        path = Path(p)
        if path.is_dir():
            files = sorted(
                f
                for f in path.rglob("*")
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(path).parts)
            )
            out.extend(str(f) for f in files)
            if not files and empty is not None:
                empty.append(p)
        elif path.is_file():
            out.append(p)
        elif path.exists():
            raise InputError(f"{p}: not a regular file or folder")
        else:
            raise InputError(f"{p}: no such file or folder")
    return out


def _raw_stream(path: str) -> BinaryIO:
    if path == STDIN:
        return sys.stdin.buffer
    try:
        return open(path, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise InputError(f"{path}: cannot open: {exc.strerror}") from exc


class _Counting(io.RawIOBase):
    """Counts bytes read from the underlying (compressed) stream, for the progress bar."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = self.inner.readinto(buffer)  # type: ignore[attr-defined]
        n = n or 0
        self.count += n
        return n


class _ZstdFrames(io.RawIOBase):
    """zstd frames one after another, decompressed; input that ends inside a frame raises ZstdError.

    (zstandard's own ``stream_reader`` ends a cut frame quietly, as if the input were whole.)
    """

    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner
        self.frame = zstandard.ZstdDecompressor().decompressobj()
        self.in_frame = False  # input seen since the last complete frame
        self.out = b""
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while self.pos == len(self.out):
            packed = self.inner.read(1 << 20)
            if not packed:
                if self.in_frame:
                    raise zstandard.ZstdError("the input ends inside a zstd frame")
                return 0
            pieces = []
            while packed:
                if self.frame.eof:
                    self.frame = zstandard.ZstdDecompressor().decompressobj()
                pieces.append(self.frame.decompress(packed))
                packed = self.frame.unused_data if self.frame.eof else b""
            self.in_frame = not self.frame.eof
            self.out, self.pos = b"".join(pieces), 0
        n = min(len(buffer), len(self.out) - self.pos)
        buffer[:n] = self.out[self.pos : self.pos + n]
        self.pos += n
        return n


def open_decompressed(source: Source) -> tuple[BinaryIO, _Counting]:
    """The decompressed byte stream of a source; gzip and zstd recognised by their magic bytes."""
    counting = _Counting(_raw_stream(source.path))
    buffered = io.BufferedReader(counting, buffer_size=1 << 20)
    head = buffered.peek(4)[:4]
    if head.startswith(GZIP_MAGIC):
        source.compression = "gzip"
        return gzip.GzipFile(fileobj=buffered, mode="rb"), counting  # type: ignore[return-value]
    if head.startswith(ZSTD_MAGIC):
        source.compression = "zstd"
        return io.BufferedReader(_ZstdFrames(buffered), buffer_size=1 << 20), counting
    return buffered, counting


_STREAM_ERRORS = (EOFError, OSError, zlib.error, zstandard.ZstdError)


def _truncated(exc: Exception) -> TruncatedInput:
    return TruncatedInput(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def _read(stream: BinaryIO, n: int, compressed: bool) -> tuple[bytes, TruncatedInput | None]:
    """Up to ``n`` bytes, and the error that ended a compressed stream early (None if it did not).

    A compressed stream is read a decompressed piece at a time, so that a break keeps what came before it:
    ``read(n)`` would raise and lose the whole block.
    """
    if not compressed:
        try:
            return stream.read(n), None
        except OSError as exc:
            return b"", _truncated(exc)
    pieces: list[bytes] = []
    got = 0
    try:
        while got < n:
            piece = stream.read1(n - got)  # type: ignore[attr-defined]
            if not piece:
                break
            pieces.append(piece)
            got += len(piece)
    except _STREAM_ERRORS as exc:
        return b"".join(pieces), _truncated(exc)
    return b"".join(pieces), None


def line_bounds(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start and end offsets of each line in ``data`` (newline = b"\\n"; a final line without one counts)."""
    nl = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10).astype(np.int64)
    starts = np.concatenate(([0], nl + 1)).astype(np.int64)
    ends = np.concatenate((nl, [len(data)])).astype(np.int64)
    if len(data) == 0 or data.endswith(b"\n"):  # no line after the last newline
        starts, ends = starts[:-1], ends[:-1]
    return starts, ends


def read_blocks(stream: BinaryIO, source: Source, block_bytes: int = BLOCK_BYTES) -> Iterator[Block]:
    """Whole-line blocks of about ``block_bytes``; updates the source's fingerprint."""
    carry = b""
    line_no = 1
    offset = 0
    first = True
    while True:
        chunk, broken = _read(stream, block_bytes, source.compression != "none")
        if chunk:
            source.fingerprint.update(chunk)
        if first and chunk.startswith(BOM):  # line 1 starts after it (its byte offset is 3)
            chunk, offset = chunk[len(BOM) :], len(BOM)
        first = False
        data = carry + chunk if carry else chunk
        if broken is not None:  # the whole lines before the break, then the error (the line it cut is lost)
            cut = data.rfind(b"\n") + 1
            if cut:
                starts, ends = line_bounds(data[:cut])
                yield Block(data[:cut], line_no, offset, starts, ends)
            raise broken
        if chunk:
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # one line longer than a block: keep reading
                carry = data
                continue
            data, carry = data[:cut], data[cut:]
        else:
            carry = b""
        if data:
            starts, ends = line_bounds(data)
            yield Block(data, line_no, offset, starts, ends)
            line_no += len(starts)
            offset += len(data)
        if not chunk:
            return
