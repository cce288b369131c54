"""How long `specdiag diagnose` takes on a large simulated store, and how much memory it holds.

    .venv/bin/python benchmarks/diagnose.py [--requests 60000] [--replicate 10] [--scenario mixed] [--db FILE]
        [--reuse]

Simulates --requests requests of a scenario (about 80 steps each), ingests them, then copies every request and step
--replicate - 1 more times into further deployments (``<name>~k``, same times and values) so that the store reaches
tens of millions of steps without hours of simulation and ingest. Then it times diagnose (all queries, tests and
findings) on that store in this process and reports the peak resident memory. Figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from specdiag.diagnose import diagnose  # noqa: E402
from specdiag.ingest import ingest_paths  # noqa: E402
from specdiag.simulate import simulate  # noqa: E402
from specdiag.store import connect  # noqa: E402


def replicate(db: Path, copies: int) -> None:
    """Copies 1..copies-1 of every request and step, as deployments `<name>~k` with request ids `<id>~k`."""
    con = connect(db)
    for k in range(1, copies):
        con.execute(
            "insert into requests select * replace (request_id || $suffix as request_id, "
            "deployment || $suffix as deployment) from requests where not contains(deployment, '~')",
            {"suffix": f"~{k}"},
        )
        con.execute(
            "insert into steps select * replace (request_id || $suffix as request_id) from steps "
            "where not contains(request_id, '~')",
            {"suffix": f"~{k}"},
        )
    con.execute("checkpoint")
    con.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=60_000)
    ap.add_argument("--replicate", type=int, default=10)
    ap.add_argument("--scenario", default="mixed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--db", type=Path, help="keep the store here (default: a temporary folder)")
    ap.add_argument(
        "--reuse", action="store_true", help="time diagnose on an existing --db, building nothing"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "bench.duckdb"
        trace = Path(tmp) / "bench.jsonl"
        timings: dict[str, float] = {}
        if not (args.reuse and db.exists()):
            t = time.perf_counter()
            simulate(trace, scenario=args.scenario, requests=args.requests, seed=args.seed)
            timings["simulate_s"] = time.perf_counter() - t
            t = time.perf_counter()
            ingest_paths([trace], db=db, progress=False)
            timings["ingest_s"] = time.perf_counter() - t
            trace.unlink()
            t = time.perf_counter()
            replicate(db, args.replicate)
            timings["replicate_s"] = time.perf_counter() - t
        con = connect(db)
        requests, steps = con.execute(
            "select (select count(*) from requests), (select count(*) from steps)"
        ).fetchone()  # type: ignore[misc]
        t = time.perf_counter()
        found = diagnose(con)
        timings["diagnose_s"] = time.perf_counter() - t
        con.close()
        size = db.stat().st_size
    result = {
        "scenario": args.scenario if "simulate_s" in timings else None,
        "requests": requests,
        "steps": steps,
        "db_bytes": size,
        **{k: round(v, 1) for k, v in timings.items()},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "findings": len(found),
        "kinds": sorted({f.kind for f in found}),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
