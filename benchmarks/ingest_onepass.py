"""Feasibility of a one-pass ingest (DuckDB reads, checks and appends a clean trace file) against polars alone and
`specdiag ingest`, on the file benchmarks/ingest.py writes.

    .venv/bin/python benchmarks/ingest_onepass.py [--steps 1000000] [--repeat 3] [--big-factor 0]

1. The whole process of each, in turn, best of ``--repeat`` (wall, CPU of all threads, peak RSS): polars
   ``read_ndjson -> write_parquet``; `specdiag ingest`; the prototype (``onepass_reader``: a byte scan for line
   accounting in a worker thread while DuckDB infers every field's type over the whole file, then a typed read
   into a temp table, the v1 checks in SQL, the writes and the ledger row in one transaction).
2. The rows the prototype stored against those `specdiag ingest` stored: they must be the same.
3. CPU seconds per stage of the prototype in one process, the stages one after the other.
4. With ``--big-factor N``: the prototype's whole process on a file N times larger (peak RSS).

The prototype process imports duckdb and numpy but not polars or pyarrow, so it pays no import it does not use.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import PY, generate, ingest_cmd, measure  # noqa: E402  (benchmarks/ingest.py)


def _update_totals(con: Any) -> None:
    """ingest_store.update_totals (that module imports polars at load, which this process avoids)."""
    con.execute(
        """
        update requests r set verify_steps = a.verify_steps, drafted = a.drafted, accepted = a.accepted,
                              draft_ms = a.draft_ms, verify_ms = a.verify_ms
        from (
            select s.request_id, count(*) filter (where s.drafted > 0) as verify_steps,
                   sum(s.drafted) as drafted, sum(s.accepted) as accepted,
                   sum(s.draft_ms) as draft_ms, sum(s.verify_ms) as verify_ms
            from steps s
            where s.request_id in (select distinct request_id from _touched)
            group by s.request_id
        ) a
        where r.request_id = a.request_id
        """
    )


def run_prototype(path: str, db: str, stages: dict[str, float] | None = None) -> None:
    """Ingest one clean trace file with the prototype, as `specdiag ingest` would (settings, ledger, one transaction).

    ``stages``: CPU seconds per stage are added to it, and the scan and the inference run one after the other.
    """
    import onepass_reader as op
    from onepass_scan import scan_file

    from specdiag.ingest_read import Source, open_decompressed
    from specdiag.store import connect, transaction

    def stage(name: str, func: Any, *args: Any) -> Any:
        if stages is None:
            return func(*args)
        t = time.process_time()
        try:
            return func(*args)
        finally:
            stages[name] = stages.get(name, 0.0) + time.process_time() - t

    con = stage("connect", connect, db)
    con.execute("set memory_limit = '512MB'")  # as specdiag ingest sets it
    con.execute("set preserve_insertion_order = false")
    source = Source(path)
    open_decompressed(source)[0].close()  # sniffs the compression
    if stages is None:  # as the prototype runs: the scan in a worker thread, DuckDB's inference here
        prepared = op.prepare(con, source)
    else:
        scan = stage("byte scan (SHA-256, line accounting)", scan_file, Source(path))
        con.execute(op._MACROS)
        p = stage("DuckDB type inference", op.plan, con, path, "none")
        prepared = op.Prepared(path, "none", scan, p, "x", op._stamp(path))
    t = time.process_time()
    with transaction(con):
        con.execute("create or replace temp table _touched (request_id varchar)")
        stage("typed read into a temp table", op.read_rows, con, path, "none", prepared.plan, prepared.scan)
        stage("checks in SQL", op.check_rows, con, prepared.plan)
        counts = stage(
            "writes (dedupe, append, totals)", op.write_rows, con, prepared.plan, prepared.fingerprint
        )
        stage("writes (dedupe, append, totals)", _update_totals, con)
        ledger = {
            "file_id": prepared.fingerprint,
            "path": path,
            "format": "trace",
            "ingested_at": datetime.now(UTC).replace(tzinfo=None),
            "lines": prepared.scan.lines,
            "stored_lines": counts.stored_lines,
            "requests": counts.requests,
            "steps": counts.steps,
            "windows": 0,
            "duplicates": counts.duplicates,
            "blank": len(prepared.scan.blank_lines),
            "rejected": 0,
            "other_lines": 0,
        }
        # as ingest_store.write_ledger: the row is a bound struct, its keys matched to columns by name
        con.execute(
            "insert into ingest_ledger by name select unnest($rows, recursive := true)", {"rows": [ledger]}
        )
        inside = time.process_time() - t
    if stages is not None:
        stages["commit"] = time.process_time() - t - inside
    stage("close (checkpoint)", con.close)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):  # request totals of ms are sums in another order
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def compare(db_a: Path, db_b: Path) -> str:
    """'same rows' or the first difference between two stores' requests, steps and ledger counts."""
    import duckdb

    out = []
    for db in (db_a, db_b):
        con = duckdb.connect(str(db), read_only=True)
        out.append(
            [
                con.execute("select * exclude (file_id) from requests order by request_id").fetchall(),
                con.execute("select * from steps order by request_id, step").fetchall(),
                con.execute(
                    "select lines, stored_lines, requests, steps, duplicates, blank, rejected from ingest_ledger"
                ).fetchall(),
            ]
        )
        con.close()
    for name, a, b in zip(("requests", "steps", "ledger"), *out):
        if len(a) != len(b):
            return f"{name}: {len(a)} rows against {len(b)}"
        for x, y in zip(a, b):
            if not _same(x, y):
                return f"{name} differ: {x} against {y}"
    return "same rows"


def parse_only(path: Path) -> float:
    """CPU seconds for DuckDB to parse every line of ``path`` (``read_json_objects``), the floor of any read."""
    import duckdb

    con = duckdb.connect()
    t = time.process_time()
    con.execute(
        "select count(*) from read_json_objects($path, format = 'newline_delimited')", {"path": str(path)}
    )
    con.fetchall()
    seconds = time.process_time() - t
    con.close()
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--big-factor", type=int, default=0, help="also the prototype's peak RSS on a file this much larger"
    )
    ap.add_argument("--run", nargs=2, metavar=("FILE", "DB"), help=argparse.SUPPRESS)  # one prototype process
    args = ap.parse_args()
    if args.run:
        run_prototype(*args.run)
        return
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        trace = d / "trace.jsonl"
        reqs, steps = generate(trace, args.steps, 0)
        print(f"file: {reqs:,} requests, {steps:,} steps, {trace.stat().st_size / 2**20:.0f} MB")
        polars_cmd = [
            PY,
            "-c",
            f"import polars as pl; pl.read_ndjson({str(trace)!r}).write_parquet({str(d / 'p.parquet')!r})",
        ]
        runs: dict[str, list[tuple[float, float, float]]] = {"polars": [], "ingest": [], "prototype": []}
        for k in range(args.repeat):
            runs["polars"].append(measure(polars_cmd))
            runs["ingest"].append(measure(ingest_cmd(trace, d / f"i{k}.duckdb")))
            runs["prototype"].append(measure([PY, __file__, "--run", str(trace), str(d / f"o{k}.duckdb")]))
        best = {name: min(r) for name, r in runs.items()}
        for name, (wall, rss, cpu) in best.items():
            ratio = f"{wall / best['polars'][0]:.2f}x wall, {cpu / best['polars'][2]:.2f}x CPU"
            print(f"{name:10s} {wall:6.2f} s wall, {cpu:6.2f} s CPU, peak RSS {rss:5.0f} MB ({ratio} polars)")
        print("all runs (wall s):", {name: [round(r[0], 2) for r in rs] for name, rs in runs.items()})
        print("prototype against specdiag ingest:", compare(d / "o0.duckdb", d / "i0.duckdb"))
        here = str(Path(__file__).resolve().parent)
        imports = f"import sys, time; sys.path.insert(0, {here!r}); import onepass_reader, specdiag.store"
        stages = {"python start-up and imports (own process)": measure([PY, "-c", imports])[2]}
        run_prototype(str(trace), str(d / "stages.duckdb"), stages)
        for name, seconds in stages.items():
            print(f"  {name:45s} {seconds:6.2f} s CPU")
        print(f"  {'total':45s} {sum(stages.values()):6.2f} s CPU")
        print(
            f"  for comparison, DuckDB parsing the file only (read_json_objects): {parse_only(trace):.2f} s CPU"
        )
        if args.big_factor > 0:
            trace.unlink()
            big = d / "big.jsonl"
            breqs, bsteps = generate(big, args.steps * args.big_factor, 1, id_prefix="b")
            wall, rss, cpu = measure([PY, __file__, "--run", str(big), str(d / "big.duckdb")])
            mb = big.stat().st_size / 2**20
            print(
                f"prototype, {bsteps:,} steps ({mb:.0f} MB): {wall:.2f} s wall, {cpu:.2f} s CPU, peak RSS {rss:.0f} MB"
            )
    print(f"python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
