"""Engine log and metrics formats (vLLM, SGLang, TensorRT-LLM, TGI, Prometheus).

Contract with ``specdiag.ingest``: a format module exposes

    NAME: str                                   # e.g. "vllm-v1-log"
    def detect(head: list[str]) -> bool          # head = first lines of the (decompressed) file, ANSI not stripped
    def parse(lines: Iterable[Line], ctx: ParseContext) -> Parsed

and is listed in ``FORMATS`` below, most specific first. ``ingest`` writes ``Parsed`` into the store in the same
transaction as the file's ledger row. Every input line must be accounted for exactly once:
``lines == used_lines + duplicates + blank + len(rejects) + other_lines`` (duplicates are counted by ingest).

Cumulative sources (Prometheus counters, vLLM V0 log lines) return ``Parsed.samples`` instead of windows: ingest
passes them to ``specdiag.formats.samples.write_samples(con, parsed.samples, file_id)`` in the same transaction,
which stores them and rebuilds the windows of their series from every stored sample (so separate scrape files
difference against each other); it returns the number of windows added, to add to ``len(parsed.windows)``.
Window and request rows leave ``file_id`` to ingest; ``extra`` is JSON text. Times are naive UTC.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Line:
    number: int  # 1-based
    byte_offset: int  # of the line start in the decompressed stream
    raw: bytes  # without the trailing newline


@dataclass
class ParseContext:
    path: str  # as given by the user (for messages and the rejects table)
    deployment: str | None = None  # --deployment
    year: int | None = None  # --year, for logs whose timestamps have none
    mtime: datetime | None = None  # the file's modification time (fallback for the year)
    tz: str | None = None  # IANA zone the engine logged its local times in; None = the times are UTC


@dataclass
class Reject:
    line: int
    byte_offset: int
    reason: str  # one of specdiag.rejects.REASONS
    detail: str
    raw: bytes


@dataclass
class Parsed:
    format: str
    requests: list[dict[str, Any]] = field(default_factory=list)  # rows for the requests table
    windows: list[dict[str, Any]] = field(default_factory=list)  # rows for the windows table
    samples: list[dict[str, Any]] = field(
        default_factory=list
    )  # rows for counter_samples (see write_samples)
    rejects: list[Reject] = field(default_factory=list)
    used_lines: int = 0  # lines that went into stored rows
    blank: int = 0
    other_lines: int = 0  # lines that match no metrics pattern
    notes: list[str] = field(default_factory=list)  # messages for the user (e.g. "year taken from mtime")


FORMATS: list[str] = [
    # module names under specdiag.formats, most specific first
    "trtllm_iterations",
    "vllm_request",
    "sglang_request",
    "prometheus",
    "sglang_log",
    "vllm_log",
]


def detect(head: list[str]) -> str | None:
    """The name of the first format whose detector accepts ``head``, or None."""
    import importlib

    for module_name in FORMATS:
        module = importlib.import_module(f"specdiag.formats.{module_name}")
        if module.detect(head):
            return str(module.NAME)
    return None


def parse(name: str, lines: Iterable[Line], ctx: ParseContext) -> Parsed:
    import importlib

    for module_name in FORMATS:
        module = importlib.import_module(f"specdiag.formats.{module_name}")
        if module.NAME == name:
            return module.parse(lines, ctx)  # type: ignore[no-any-return]
    raise KeyError(name)
