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
        if sys.stdin is None:  # started with stdin closed
            raise InputError("-: standard input is closed")
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


class _ZstdFrameEnds:
    """Follows the layout of zstd frames (RFC 8878 section 3.1) over the compressed bytes, without decompressing
    them, to tell whether the input ended between two frames (whole) or inside one (cut short)."""

    def __init__(self) -> None:
        self.part = "magic"  # what the next bytes are: magic, descriptor, header, block, skippable_size
        self.head = b""  # the bytes of that part read so far
        self.skip = 0  # bytes to pass over first: block content, checksum, a skippable frame
        self.checksum = False  # the frame ends with a 4-byte content checksum
        self.header_bytes = 0  # the frame header's length after its descriptor byte

    @property
    def between_frames(self) -> bool:
        return self.part == "magic" and not self.head and not self.skip

    def feed(self, data: bytes | memoryview) -> None:
        pos = 0
        while pos < len(data) and self.part != "unknown":
            if self.skip:
                step = min(self.skip, len(data) - pos)
                self.skip -= step
                pos += step
                continue
            need = _ZSTD_PART_BYTES.get(self.part) or self.header_bytes
            take = min(need - len(self.head), len(data) - pos)
            self.head += bytes(data[pos : pos + take])
            pos += take
            if len(self.head) == need:
                head, self.head = self.head, b""
                self._next(head)

    def _next(self, head: bytes) -> None:
        if self.part == "magic":
            magic = int.from_bytes(head, "little")
            if magic == 0xFD2FB528:
                self.part = "descriptor"
            elif magic >> 4 == 0x184D2A5:  # a skippable frame: its size, then that many bytes
                self.part = "skippable_size"
            else:  # not zstd: the decompressor says so
                self.part = "unknown"
        elif self.part == "skippable_size":
            self.skip, self.part = int.from_bytes(head, "little"), "magic"
        elif self.part == "descriptor":
            d = head[0]
            fcs, single, did = d >> 6, (d >> 5) & 1, d & 3
            self.checksum = bool((d >> 2) & 1)
            self.header_bytes = (
                (0 if single else 1) + (0, 1, 2, 4)[did] + ((1 if single else 0), 2, 4, 8)[fcs]
            )
            self.part = "header" if self.header_bytes else "block"
        elif self.part == "header":
            self.part = "block"
        elif self.part == "block":  # 3 bytes: last block flag, type (raw, RLE, compressed), size
            h = int.from_bytes(head, "little")
            last, kind, size = h & 1, (h >> 1) & 3, h >> 3
            self.skip = 1 if kind == 1 else size
            if last:
                self.skip += 4 if self.checksum else 0
                self.part = "magic"


_ZSTD_PART_BYTES = {"magic": 4, "skippable_size": 4, "descriptor": 1, "block": 3}


class _Tee:
    """The compressed bytes the zstd reader reads, shown to the frame walker on their way."""

    def __init__(self, inner: BinaryIO, frames: _ZstdFrameEnds) -> None:
        self.inner = inner
        self.frames = frames

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.frames.feed(data)
        return data


class _ZstdChecked(io.RawIOBase):
    """zstd frames one after another, decompressed by zstandard's ``stream_reader`` (whose reads stay bounded, even
    for a stream that inflates a thousandfold); input that ends inside a frame, which the reader passes over quietly,
    raises ZstdError."""

    def __init__(self, inner: BinaryIO) -> None:
        self.frames = _ZstdFrameEnds()
        tee = _Tee(inner, self.frames)  # the reader needs only read()
        self.reader = zstandard.ZstdDecompressor().stream_reader(tee, read_across_frames=True)  # type: ignore[arg-type]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = self.reader.readinto(buffer)
        if n == 0 and not self.frames.between_frames:
            raise zstandard.ZstdError("the input ends inside a zstd frame")
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
        return io.BufferedReader(_ZstdChecked(buffered), buffer_size=1 << 20), counting
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
