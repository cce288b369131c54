"""Where `ingest` spends its CPU: CPU seconds per stage for one trace file, in one process.

    .venv/bin/python benchmarks/ingest_stages.py [--steps 1000000]

Generates the same file as benchmarks/ingest.py, then ingests it into a fresh database with each stage wrapped in
``time.process_time`` (all threads of the process), with the worker thread that overlaps parsing and writing turned
off so that the stages do not overlap: pyarrow's parse, the vectorised checks, the DuckDB writes, the
rest of reading (decompression, SHA-256, line splitting), commit and close. Imports are measured separately.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import generate  # noqa: E402  (benchmarks/ingest.py)

SPENT: dict[str, float] = {}


def timed(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        try:
            return func(*args, **kwargs)
        finally:
            SPENT[name] = SPENT.get(name, 0.0) + time.process_time() - start

    return wrapper


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1_000_000)
    args = ap.parse_args()
    start = time.process_time()
    from specdiag import ingest, ingest_store, ingest_trace

    imports = time.process_time() - start
    read_whole = timed("pyarrow parse", ingest_trace.read_whole)
    # inside the parse: the guard that keeps lines nested too deep for pyarrow from reaching it
    ingest_trace._reader_safe = timed("nesting guard", ingest_trace._reader_safe)
    parse_block = timed("parse_block", ingest_trace.parse_block)

    # One thread, so that each stage's CPU (process-wide: all threads) is its own; ingest itself reads and parses
    # the next block in a worker thread while this one is checked and written.
    ingest._parsed = lambda blocks: (parse_block(b, read_whole(b)) for b in blocks)
    ingest.write_trace_rows = timed("duckdb writes", ingest_store.write_trace_rows)
    ingest.update_totals = timed("duckdb writes", ingest_store.update_totals)
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.jsonl"
        generate(trace, args.steps, 0)
        t0 = time.process_time()
        con = ingest.connect_for_ingest(Path(tmp) / "s.duckdb")  # with ingest's settings
        t1 = time.process_time()
        ingest.ingest_files(con, [str(trace)], progress=False)
        t2 = time.process_time()
        con.close()
        t3 = time.process_time()
    rows = {
        "imports (specdiag.ingest and its libraries)": imports,
        "connect": t1 - t0,
        "UTF-8 check and pyarrow parse": SPENT["pyarrow parse"],
        "range checks, rows (polars)": SPENT["parse_block"],
        "duckdb writes (dedupe, append, totals)": SPENT["duckdb writes"],
        "reading, SHA-256, commit, other": (t2 - t1)
        - SPENT["pyarrow parse"]
        - SPENT["parse_block"]
        - SPENT["duckdb writes"],
        "close (checkpoint)": t3 - t2,
    }
    for name, seconds in rows.items():
        print(f"{name:45s} {seconds:6.2f} s CPU")
        if name.startswith("UTF-8"):
            print(f"{'  of which the nesting guard':45s} {SPENT.get('nesting guard', 0.0):6.2f} s CPU")
    print(f"{'total':45s} {sum(rows.values()):6.2f} s CPU")


if __name__ == "__main__":
    main()
