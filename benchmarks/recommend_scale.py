"""Time `recommend_report` (what `specdiag recommend --json` computes) on a large synthetic store built in DuckDB.

    .venv/bin/python benchmarks/recommend_scale.py --steps 5000000 [--db /tmp/bench.duckdb] [--boot 200]

Each request has 50 steps at tau 4 (10% control traffic at tau 0), acceptance i.i.d. with alpha by deployment
(accepted = min(tau, floor(ln u / ln alpha)), a geometric prefix), batch sizes 1..64, verify and draft times from a
known cost model (5% noise). Prints the build time, the recommendation time (wall and CPU seconds, DuckDB's threads
included) and the peak resident memory. To compare with an older commit on the same store without touching the
working tree: `git worktree add /tmp/rec-base <commit>` and run its copy with `PYTHONPATH=/tmp/rec-base`.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from specdiag.recommend import recommend_report
from specdiag.store import connect

STEPS_PER_REQUEST = 50


def build(db: Path, steps: int) -> None:
    con = connect(db)
    n_req = steps // STEPS_PER_REQUEST
    con.execute(
        """
        insert into requests (request_id, source, ts, deployment, tau, task, target_model, draft_model, batch_size)
        select 'r' || i, 'trace', timestamp '2026-01-01' + to_seconds(i), 'dep-' || (i % 4),
               case when i % 10 = 0 then 0 else 4 end, ['chat', 'code', 'math'][1 + i % 3],
               'target', 'draft', 1 + (i % 64)
        from range(?) as t(i)
        """,
        [n_req],
    )
    con.execute(
        """
        insert into steps (request_id, step, drafted, accepted, draft_ms, verify_ms, batch_size)
        with s as (
            select r.request_id, k as step, r.tau, r.batch_size,
                   0.6 + 0.08 * cast(substr(r.deployment, 5) as integer) as alpha, random() as u
            from requests as r, range(?) as t(k)
        )
        select request_id, step, tau,
               least(tau, cast(floor(ln(greatest(u, 1e-12)) / ln(alpha)) as integer)),
               tau * 1.2 * (1 + 0.05 * (random() - 0.5)),
               (20 + 0.02 * (tau + 1) * batch_size) * (1 + 0.05 * (random() - 0.5)),
               batch_size
        from s
        """,
        [STEPS_PER_REQUEST],
    )
    con.close()


def _cpu() -> float:
    """CPU seconds of this process, DuckDB's threads included (less sensitive to other jobs than wall time)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5_000_000)
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--boot", type=int, default=200)
    parser.add_argument("--by", default="task")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "bench.duckdb"
        if not db.exists():
            t0 = time.perf_counter()
            build(db, args.steps)
            print(f"built {args.steps:,} steps in {time.perf_counter() - t0:.1f} s")
        con = connect(db, read_only=True)
        n_steps = con.execute("select count(*) from steps").fetchone()[0]  # type: ignore[index]
        by = [c for c in args.by.split(",") if c]
        t0, cpu0 = time.perf_counter(), _cpu()
        report = recommend_report(con, by=by, n_boot=args.boot)
        elapsed, cpu = time.perf_counter() - t0, _cpu() - cpu0
        con.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"recommend --by {args.by} --boot {args.boot}: {n_steps:,} steps, "
        f"{len(report['recommendations'])} recommendations in {elapsed:.1f} s wall, {cpu:.1f} s CPU, "
        f"peak RSS {peak_mb:.0f} MB, load average {os.getloadavg()[0]:.1f}"
    )
    for r in report["recommendations"][:3]:
        print(f"  {r['deployment']} {r['segment']}: alpha {r['alpha']:.3f}, tau {r['current_tau']} -> "
              f"{r['recommended_tau']}, {r['expected_speedup']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
