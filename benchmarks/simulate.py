"""How fast `specdiag simulate` generates and writes steps, and that its memory stays bounded.

    .venv/bin/python benchmarks/simulate.py [--requests 20000] [--scenario mixed] [--formats trace trace-flat vllm]
        [--scale 5]

Each run is a fresh subprocess (so peak resident memory is its own): the whole `simulate(...)` call, i.e. ground
truth, generation and writing to a file on local disk, timed with perf_counter. Steps per second = steps written /
wall time, and per CPU second of the process (process_time: what the run itself used, which a busy shared
machine does not inflate the way it inflates wall time). The trace format is also run at --scale x the requests: peak memory must not grow with the output size
(generation streams blocks of 4096 requests). The machine's 1-minute load average is printed beside each figure:
on a shared machine it explains most of the run-to-run spread. Figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, resource, sys, time
from specdiag.simulate import simulate
out, scenario, requests, fmt = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
t0, c0 = time.perf_counter(), time.process_time()
truth = simulate(out, scenario=scenario, requests=requests, fmt=fmt)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
import os
print(json.dumps({"wall_s": wall, "cpu_s": cpu, "steps": truth["generated"]["steps"], "requests": requests,
                  "bytes": os.path.getsize(out), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(scenario: str, requests: int, fmt: str, folder: Path) -> dict:
    out = folder / f"bench.{fmt}"
    load = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(out), scenario, str(requests), fmt],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    result = json.loads(proc.stdout)
    result.update(
        format=fmt,
        load_1min=load,
        steps_per_s=result["steps"] / result["wall_s"],
        steps_per_cpu_s=result["steps"] / result["cpu_s"],
    )
    out.unlink()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--scenario", default="mixed")
    parser.add_argument(
        "--formats", nargs="+", default=["trace", "trace-flat", "vllm", "sglang", "prometheus"]
    )
    parser.add_argument("--scale", type=int, default=5, help="also run trace at this many times the requests")
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in args.formats:
            rows.append(run(args.scenario, args.requests, fmt, Path(tmp)))
        if args.scale > 1:
            rows.append(run(args.scenario, args.requests * args.scale, "trace", Path(tmp)))
    print(f"cpus: {os.cpu_count()}, scenario {args.scenario}")
    print(
        "| format | requests | steps | wall s | steps/s (wall) | CPU s | steps per CPU s | MB written "
        "| peak RSS MB | load (1 min) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['format']} | {r['requests']:,} | {r['steps']:,} | {r['wall_s']:.1f} | {r['steps_per_s']:,.0f} | "
            f"{r['cpu_s']:.1f} | {r['steps_per_cpu_s']:,.0f} | {r['bytes'] / 1e6:.0f} | {r['peak_rss_mb']:.0f} | "
            f"{r['load_1min']:.1f} |"
        )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
