"""Where `ingest` spends its CPU: CPU seconds per stage for one trace file, in one process.

    .venv/bin/python benchmarks/ingest_stages.py [--steps 1000000] [--path duckdb|blocks]

Generates the same file as benchmarks/ingest.py, then ingests it into a fresh database with each stage wrapped in
``time.process_time`` (all threads of the process), stages run one after the other (ingest overlaps some of them in
a worker thread):

- ``--path duckdb`` (the one-pass path, which a clean file takes): the byte scan (SHA-256, line accounting), DuckDB's
  type inference, the typed read into a temp table, the checks in SQL, the writes, commit and close;
- ``--path blocks`` (the block path): pyarrow's parse, the vectorised checks, the DuckDB writes, the rest of reading
  (decompression, SHA-256, line splitting), commit and close.

Imports are measured separately.
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


def one_pass(steps: int) -> None:
    """Stages of the one-pass DuckDB path (ingest_duckdb), called in the order ``ingest`` calls them."""
    start = time.process_time()
    from specdiag import ingest_duckdb, ingest_scan, ingest_store
    from specdiag.ingest_read import Source, open_decompressed
    from specdiag.store import connect, transaction

    imports = time.process_time() - start
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.jsonl"
        generate(trace, steps, 0)
        rows: dict[str, float] = {"imports (specdiag.ingest_duckdb and its libraries)": imports}

        def stage(name: str, func: Callable[..., Any], *args: Any) -> Any:
            t = time.process_time()
            out = func(*args)
            rows[name] = rows.get(name, 0.0) + time.process_time() - t
            return out

        con = stage("connect", connect, Path(tmp) / "s.duckdb")
        con.execute("set memory_limit = '512MB'")
        con.execute("set preserve_insertion_order = false")
        source = Source(str(trace))
        open_decompressed(source)[0].close()
        scan = stage("byte scan (SHA-256, line accounting)", ingest_scan.scan_file, Source(str(trace)))
        con.execute(ingest_duckdb._MACROS)
        plan = stage("DuckDB type inference", ingest_duckdb.plan, con, str(trace), "none")
        t = time.process_time()
        with transaction(con):
            ingest_store.begin_file(con)
            stage(
                "typed read into a temp table", ingest_duckdb.read_rows, con, str(trace), "none", plan, scan
            )
            stage("checks in SQL", ingest_duckdb.check_rows, con, plan)
            stage("writes (dedupe, append, totals)", ingest_duckdb.write_rows, con, plan, "x")
            stage("writes (dedupe, append, totals)", ingest_store.update_totals, con)
            inside = time.process_time() - t
        rows["commit"] = time.process_time() - t - inside
        stage("close (checkpoint)", con.close)
    for name, seconds in rows.items():
        print(f"{name:52s} {seconds:6.2f} s CPU")
    print(f"{'total':52s} {sum(rows.values()):6.2f} s CPU")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--path", choices=("duckdb", "blocks"), default="duckdb")
    args = ap.parse_args()
    if args.path == "duckdb":
        one_pass(args.steps)
        return
    start = time.process_time()
    from specdiag import ingest, ingest_duckdb, ingest_store, ingest_trace
    from specdiag.store import connect

    imports = time.process_time() - start
    read_whole = timed("pyarrow parse", ingest_trace.read_whole)
    parse_block = timed("parse_block", ingest_trace.parse_block)

    # One thread, so that each stage's CPU (process-wide: all threads) is its own; ingest itself reads and parses
    # the next block in a worker thread while this one is checked and written.
    ingest._parsed = lambda blocks: (parse_block(b, read_whole(b)) for b in blocks)

    def off(*args: Any, **kwargs: Any) -> Any:
        raise ingest_duckdb.NotProvable("switched off by benchmarks/ingest_stages.py")

    ingest_duckdb.prepare = off  # type: ignore[assignment]
    ingest.write_trace_rows = timed("duckdb writes", ingest_store.write_trace_rows)
    ingest.update_totals = timed("duckdb writes", ingest_store.update_totals)
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.jsonl"
        generate(trace, args.steps, 0)
        t0 = time.process_time()
        con = connect(Path(tmp) / "s.duckdb")
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
    print(f"{'total':45s} {sum(rows.values()):6.2f} s CPU")


if __name__ == "__main__":
    main()
