"""Time whole `specdiag diagnose` and `specdiag recommend` processes on wide synthetic stores built in DuckDB.

    .venv/bin/python benchmarks/wide_store.py [--baseline-tree DIR] [--timeout 120] [--quick] [--seed 0]
        [--cfg-deployments 10] [--cfg-tasks 200] [--cfg-temperatures 1000] [--cfg-days 30] [--cfg-requests 200]
        [--sparse-requests 20000] [--sparse-tasks 1000] [--sparse-days 365]
        [--groups-deployments 500,1000] [--groups-tasks 20] [--groups-requests 100] [--no-recommend-command]
        [--stores cfg,sparse,groups] [--db-dir DIR]

The three shapes of store behind the scalability fixes of commit 163cc59 (each a cliff in the code before it):

1. **Many configuration values**: ``--cfg-deployments`` deployments of ``--cfg-requests`` requests each over
   ``--cfg-days`` days, ``--cfg-tasks`` tasks, every one of ``--cfg-temperatures`` temperatures on as many requests in
   a random order (by a hash of the request index), 4 steps a request. Every temperature first seen after a deployment's first hour is a
   configuration-change candidate of its segments. Times ``specdiag diagnose --json``.
2. **Sparse strata over a year**: one deployment, ``--sparse-requests`` requests over ``--sparse-days`` days,
   ``--sparse-tasks`` tasks, 10 temperatures, 2 steps a request: thousands of (task x temperature bucket) strata of a
   few requests each, over thousands of hours. Times ``specdiag diagnose --json``.
3. **Many groups**: for each of ``--groups-deployments``, that many deployments x ``--groups-requests`` requests over
   30 days, ``--groups-tasks`` tasks, 4 steps a request. Times ``specdiag recommend --by task --json --boot 0`` (the
   whole command: costs, curves and policies of every group, and the JSON) and, in a process of its own,
   ``recommend._load_units(con, ("task",), MAX_TAU)``, the part the fix changed, timed inside the process.

In every store, tau is 0 (control traffic) on every tenth request of a deployment and 4 otherwise; acceptance is a
truncated geometric prefix with per-token alpha 0.7, falling by ``--drop`` (default 0.1) from 60% of the period on
in every fifth deployment (``dep-0``, ``dep-5``, ...), so that diagnose has regressions to report. All draws are
hashes of the row and ``--seed``: the same arguments build the same store. Every value in the SQL is a bound parameter.

With ``--baseline-tree DIR`` (a checkout of earlier code, e.g. ``git worktree add /tmp/wide_base 163cc59~1``), each
command runs from that checkout too, in turn with this code on the same store, so that load changes hit both alike;
the script then checks that both report the same findings (kind, deployment, segment, split and since of each) and
the same recommendations (deployment, segment, current and recommended tau; expected speedup to 1e-9). A process
that runs past ``--timeout`` seconds is killed and reported as "over N s" (nothing to compare then).
``--quick`` shrinks every store to a few seconds' work (a smoke test of the script, not a measurement).

Each measured process runs under a small wrapper whose only child it is, so ``RUSAGE_CHILDREN`` gives that
process's own peak RSS. Figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from specdiag.store import connect  # noqa: E402

PY = sys.executable
START = "2025-01-01"
ALPHA = 0.7

_WRAP = (
    "import resource, subprocess, sys, time\n"
    "limit, out, err = float(sys.argv[1]), sys.argv[2], sys.argv[3]\n"
    "t = time.perf_counter()\n"
    "with open(out, 'wb') as o, open(err, 'wb') as e:\n"
    "    try:\n"
    "        rc = subprocess.run(sys.argv[4:], stdout=o, stderr=e, timeout=limit).returncode\n"
    "    except subprocess.TimeoutExpired:\n"
    "        rc = 'timeout'\n"
    "dt = time.perf_counter() - t\n"
    "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(rc, dt, u.ru_maxrss, u.ru_utime + u.ru_stime)\n"
)

# Uniform draws in [0, 1) below are ((hash(row, salt, $seed) >> 11)::double / 2^53): 53 random bits of the hash of
# (row, salt, seed).

_REQUESTS = """
insert into requests (request_id, source, ts, deployment, target_model, draft_model, tau, temperature, top_p, task,
    prompt_tokens, output_tokens, latency_ms, ttft_ms, batch_size, quality, shadow_match)
select 'r' || i, 'trace',
    $start::timestamp + to_seconds(cast((i // $deps) * $seconds / $per_dep + hash(i, 1, $seed) % 600 as bigint)),
    'dep-' || (i % $deps), 'target-70b', 'draft-1b',
    case when (i // $deps) % 10 = 0 then 0 else 4 end,
    round(t / $temps::double, 6) + 0.0000001, 0.95,
    'task-' || (hash(i, 3, $seed) % $tasks),
    50 + hash(i, 4, $seed) % 5000, 64, 1000.0, 50.0, 1 + i % 64,
    ((hash(i, 5, $seed) >> 11)::double / 9007199254740992.0),
    ((hash(i, 6, $seed) >> 11)::double / 9007199254740992.0) < 0.9
from (
    -- every one of the $temps values on as many requests, in a random order
    select i, (row_number() over (order by hash(i, 2, $seed), i) - 1) % $temps as t from range($deps * $per_dep) r(i)
)
"""

_STEPS = """
insert into steps (request_id, step, drafted, accepted, draft_ms, verify_ms, batch_size, ts)
with r as (
    select request_id, tau, batch_size, ts, cast(substr(request_id, 2) as bigint) as i,
        case when cast(substr(deployment, 5) as integer) % 5 = 0
             and ts >= $start::timestamp + to_seconds(cast(0.6 * $seconds as bigint))
        then $alpha - $drop else $alpha end as alpha
    from requests
)
select request_id, k, tau,
    case when tau = 0 then 0
         else least(tau, cast(floor(ln(greatest((hash(i * 64 + k, 7, $seed) >> 11)::double / 9007199254740992.0,
                                                1e-12)) / ln(alpha))
                              as integer)) end,
    tau * 1.2, 20 + 0.02 * (tau + 1) * batch_size, batch_size, ts + to_seconds(k)
from r, range($steps) t(k)
"""

_TOTALS = """
update requests set verify_steps = s.vs, drafted = s.d, accepted = s.acc, draft_ms = s.dm, verify_ms = s.vm
from (select request_id, count(*) filter (where drafted > 0) vs, sum(drafted) d, sum(accepted) acc,
             sum(draft_ms) dm, sum(verify_ms) vm from steps group by request_id) s
where s.request_id = requests.request_id
"""


def build(
    db: Path,
    deps: int,
    per_dep: int,
    days: int,
    tasks: int,
    temps: int,
    steps: int,
    seed: int,
    drop: float,
) -> str:
    """A store of ``deps`` x ``per_dep`` requests of ``steps`` steps each; returns a line describing it."""
    t = time.perf_counter()
    con = connect(db)
    seconds = days * 86400
    con.execute(
        _REQUESTS,
        {
            "start": START,
            "deps": deps,
            "per_dep": per_dep,
            "seconds": seconds,
            "temps": temps,
            "tasks": tasks,
            "seed": seed,
        },
    )
    con.execute(
        _STEPS,
        {"start": START, "seconds": seconds, "alpha": ALPHA, "drop": drop, "steps": steps, "seed": seed},
    )
    con.execute(_TOTALS)
    con.execute("checkpoint")
    n_req, n_steps, n_temps, n_tasks, n_hours = con.execute(
        "select count(*), (select count(*) from steps), count(distinct temperature), count(distinct task), "
        "count(distinct date_trunc('hour', ts)) from requests"
    ).fetchone()  # type: ignore[misc]
    con.close()
    return (
        f"{n_req:,} requests, {n_steps:,} steps, {deps:,} deployment{'s' if deps != 1 else ''}, {n_tasks:,} tasks, "
        f"{n_temps:,} temperatures, {n_hours:,} hours with requests, {db.stat().st_size / 2**20:.0f} MB "
        f"(built in {time.perf_counter() - t:.1f} s)"
    )


@dataclass
class Run:
    seconds: float
    rss_mb: float
    cpu: float
    timed_out: bool
    stdout: Path


def measure(cmd: list[str], out: Path, limit: float) -> Run:
    """Wall seconds, peak RSS and CPU seconds of ``cmd`` as its own process; its stdout goes to ``out``."""
    err = out.with_suffix(".err")
    res = subprocess.run(
        [PY, "-c", _WRAP, str(limit), str(out), str(err), *cmd], capture_output=True, text=True
    )
    if res.returncode != 0:
        raise SystemExit(f"wrapper failed: {res.stderr}")
    rc, seconds, rss_kb, cpu = res.stdout.split()
    if rc not in ("0", "timeout"):
        tail = err.read_text(encoding="utf-8", errors="replace").splitlines()[-5:]
        raise SystemExit(f"command failed ({rc}): {' '.join(cmd)}\n" + "\n".join(tail))
    return Run(float(seconds), int(rss_kb) / 1024, float(cpu), rc == "timeout", out)


def specdiag_cmd(tree: Path, *args: str) -> list[str]:
    """`python -m specdiag ARGS` run in ``tree``: the package is imported from that checkout."""
    code = f"import os, runpy, sys; os.chdir({str(tree)!r}); sys.path.insert(0, ''); runpy.run_module('specdiag', run_name='__main__')"
    return [PY, "-c", code, *args]


def load_units_cmd(tree: Path, db: Path) -> list[str]:
    """``recommend._load_units(con, ("task",), MAX_TAU)`` timed inside a process importing ``tree``'s package."""
    code = (
        f"import sys, time; sys.path.insert(0, {str(tree)!r})\n"
        "from specdiag import recommend as R\n"
        "from specdiag.store import connect\n"
        f"con = connect({str(db)!r}, read_only=True)\n"
        "t = time.perf_counter(); deps, _ = R._load_units(con, ('task',), R.MAX_TAU)\n"
        "print(time.perf_counter() - t, sum(len(u.groups) for u in deps.values()))\n"
    )
    return [PY, "-c", code]


def fmt(run: Run | None, limit: float) -> str:
    if run is None:
        return "-"
    if run.timed_out:
        return f"over {limit:.0f} s (killed)"
    return f"{run.seconds:.1f} s wall, {run.cpu:.1f} s CPU, peak RSS {run.rss_mb:,.0f} MB"


def findings_key(path: Path) -> list[tuple[Any, ...]]:
    """What two diagnose runs must agree on: kind, deployment, segment, split and since of each finding."""
    found = json.loads(path.read_text(encoding="utf-8"))["findings"]
    return sorted(
        (
            f["kind"],
            f["deployment"],
            json.dumps(f["segment"], sort_keys=True),
            str((f.get("evidence") or {}).get("split")),
            str(f.get("since")),
        )
        for f in found
    )


def compare_findings(a: Run, b: Run | None) -> str:
    ka = findings_key(a.stdout)
    kinds = sorted({k[0] for k in ka})
    if b is None:
        return f"findings: {len(ka)} ({', '.join(kinds) or 'none'})"
    kb = findings_key(b.stdout)
    if ka == kb:
        return f"same findings: {len(ka)} ({', '.join(kinds) or 'none'})"
    return f"DIFFERENT findings: this code {len(ka)}, baseline {len(kb)}; only here {sorted(set(ka) - set(kb))[:3]}"


def compare_recommendations(a: Run, b: Run | None) -> str:
    ra = json.loads(a.stdout.read_text(encoding="utf-8"))["recommendations"]

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["deployment"], json.dumps(r.get("segment"), sort_keys=True), r.get("current_tau"))

    ka = [(*key(r), r.get("recommended_tau")) for r in ra]
    changed = sum(r.get("recommended_tau") != r.get("current_tau") for r in ra)
    if b is None:
        return f"recommendations: {len(ka):,} ({changed:,} change tau)"
    same_bytes = a.stdout.read_bytes() == b.stdout.read_bytes()
    rb = json.loads(b.stdout.read_text(encoding="utf-8"))["recommendations"]
    kb = [(*key(r), r.get("recommended_tau")) for r in rb]
    speed = {key(r): r.get("expected_speedup") for r in rb}
    worst = max(
        (
            abs(r["expected_speedup"] - speed[key(r)]) / max(abs(speed[key(r)]), 1e-12)
            for r in ra
            if isinstance(r.get("expected_speedup"), float) and isinstance(speed.get(key(r)), float)
        ),
        default=0.0,
    )
    if ka == kb and worst <= 1e-9:
        return (
            f"same recommendations: {len(ka):,} ({changed:,} change tau; "
            f"{'identical JSON' if same_bytes else f'expected speedup within {worst:.1e}'})"
        )
    return f"DIFFERENT recommendations: this code {len(ka):,}, baseline {len(kb):,}, worst speedup diff {worst:.1e}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-tree", type=Path, help="a checkout of earlier code to time in the same run")
    ap.add_argument(
        "--timeout", type=float, default=120.0, help="seconds before a measured process is killed"
    )
    ap.add_argument("--quick", action="store_true", help="tiny stores: a smoke test of the script")
    ap.add_argument("--stores", default="cfg,sparse,groups", help="which stores: any of cfg, sparse, groups")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--drop", type=float, default=0.1, help="fall of alpha in every fifth deployment")
    ap.add_argument("--cfg-deployments", type=int, default=10)
    ap.add_argument("--cfg-tasks", type=int, default=200)
    ap.add_argument("--cfg-temperatures", type=int, default=1000)
    ap.add_argument("--cfg-days", type=int, default=30)
    ap.add_argument("--cfg-requests", type=int, default=200, help="requests per deployment")
    ap.add_argument("--sparse-requests", type=int, default=20_000)
    ap.add_argument("--sparse-tasks", type=int, default=1000)
    ap.add_argument("--sparse-days", type=int, default=365)
    ap.add_argument("--groups-deployments", default="500,1000", help="comma-separated store sizes")
    ap.add_argument("--groups-tasks", type=int, default=20)
    ap.add_argument("--groups-requests", type=int, default=100, help="requests per deployment")
    ap.add_argument(
        "--no-recommend-command", action="store_true", help="time only _load_units on the groups stores"
    )
    ap.add_argument(
        "--db-dir", type=Path, help="build the stores here and keep them (default: a temporary folder)"
    )
    args = ap.parse_args()
    if args.quick:
        args.cfg_deployments, args.cfg_tasks, args.cfg_temperatures, args.cfg_days = 3, 20, 50, 7
        args.cfg_requests = 200
        args.sparse_requests, args.sparse_tasks, args.sparse_days = 2000, 100, 60
        args.groups_deployments, args.groups_tasks, args.groups_requests = "20,40", 5, 60
    trees = [("this code", ROOT)]
    if args.baseline_tree is not None:
        trees.append(("baseline", args.baseline_tree.resolve()))
    limit = args.timeout
    print(
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC, load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}, {os.cpu_count()} cpus, python {sys.version.split()[0]}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        d = args.db_dir or Path(tmp)
        d.mkdir(parents=True, exist_ok=True)
        out = Path(tmp)

        def run_all(label: str, make_cmd: Any, compare: Any) -> None:
            runs = {}
            for name, tree in trees:
                runs[name] = measure(make_cmd(tree), out / f"{label}-{len(runs)}.out", limit)
                print(f"  {name:9s} {fmt(runs[name], limit)}", flush=True)
            if len(runs) == 2 and not any(r.timed_out for r in runs.values()):
                print(f"  {compare(runs['this code'], runs['baseline'])}")
            elif len(runs) == 2:
                print("  not compared: a run was killed")
            elif not runs["this code"].timed_out:
                print(f"  {compare(runs['this code'], None)}")

        stores = [
            (
                "1. many configuration values",
                "cfg",
                (
                    args.cfg_deployments,
                    args.cfg_requests,
                    args.cfg_days,
                    args.cfg_tasks,
                    args.cfg_temperatures,
                    4,
                ),
            ),
            (
                "2. sparse strata over a year",
                "sparse",
                (1, args.sparse_requests, args.sparse_days, args.sparse_tasks, 10, 2),
            ),
        ]
        wanted = set(args.stores.split(","))
        for title, label, shape in [s for s in stores if s[1] in wanted]:
            db = (d / f"wide-{label}.duckdb").resolve()
            db.unlink(missing_ok=True)
            info = build(db, *shape, seed=args.seed, drop=args.drop)
            print(f"{title}: {info}\n specdiag diagnose --json", flush=True)
            run_all(
                label,
                lambda tree, db=db: specdiag_cmd(tree, "diagnose", "--db", str(db), "--json"),
                compare_findings,
            )
        for n in [int(x) for x in args.groups_deployments.split(",") if x and "groups" in wanted]:
            db = (d / f"wide-groups-{n}.duckdb").resolve()
            db.unlink(missing_ok=True)
            info = build(
                db, n, args.groups_requests, 30, args.groups_tasks, 10, 4, seed=args.seed, drop=args.drop
            )
            print(f"3. many groups, {n:,} deployments x {args.groups_tasks} tasks: {info}", flush=True)
            if not args.no_recommend_command:
                print(" specdiag recommend --by task --json --boot 0")
                rec_args = ("recommend", "--db", str(db), "--by", "task", "--json", "--boot", "0")
                run_all(f"rec{n}", lambda tree, a=rec_args: specdiag_cmd(tree, *a), compare_recommendations)
            print(" recommend._load_units(con, ('task',), MAX_TAU), timed in its process")
            for name, tree in trees:
                r = measure(load_units_cmd(tree, db), out / f"units{n}.out", limit)
                if r.timed_out:
                    print(f"  {name:9s} {fmt(r, limit)}")
                    continue
                seconds, groups = r.stdout.read_text(encoding="utf-8").split()
                print(
                    f"  {name:9s} _load_units {float(seconds):.1f} s ({int(groups):,} groups); "
                    f"process {fmt(r, limit)}",
                    flush=True,
                )
    print(f"done {time.strftime('%H:%M:%S', time.gmtime())} UTC, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
