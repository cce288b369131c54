"""Calibrate diagnose on engine metrics: false alarms on healthy fleets, detection of a draft rollout.

    .venv/bin/python benchmarks/calibrate_windows.py --seeds 20 [--first-seed 100] [--requests 6000] [--days 3]
        [--formats vllm prometheus]

For each seed and format, the simulator writes the `healthy` and the `regression` scenario as that engine would log
them (a vLLM log: one deployment named after the file, the simulated deployments told apart by tau; Prometheus
scrapes: one series per deployment), ingests it into a fresh store that has no request rows, and runs diagnose:

- healthy: a false alarm is any acceptance_regression or fast_but_wrong finding;
- regression (one draft rollout lowering chat-prod's acceptance): detected when diagnose reports an
  acceptance_regression of chat-prod's deployment at its tau; how far its split (an hour boundary) lies from the
  rollout is recorded; any other such finding is a false alarm of that run.

The numbers go to docs/diagnose.md (Deployments known only from engine metrics).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from specdiag.diagnose import diagnose  # noqa: E402
from specdiag.ingest import ingest_paths  # noqa: E402
from specdiag.simulate import simulate  # noqa: E402
from specdiag.store import connect  # noqa: E402

ALARM_KINDS = ("acceptance_regression", "fast_but_wrong")


def run(root: Path, scenario: str, fmt: str, seed: int, requests: int, days: float) -> dict[str, Any]:
    out = root / f"{scenario}-{seed}.{fmt}"
    truth = simulate(out, scenario=scenario, fmt=fmt, requests=requests, days=days, seed=seed)
    db = root / f"{scenario}-{seed}-{fmt}.duckdb"
    ingest_paths([out], db=db, progress=False)
    con = connect(db)
    try:
        found = [f for f in diagnose(con) if f.kind in ALARM_KINDS]
    finally:
        con.close()
    result: dict[str, Any] = {"findings": len(found), "detected": None}
    if scenario == "regression":
        (incident,) = truth["incidents"]
        start = datetime.fromisoformat(incident["start"].replace("Z", "+00:00")).replace(tzinfo=None)
        tau = next(d["tau"] for d in truth["deployments"] if d["name"] == incident["deployment"])
        hits = [
            f
            for f in found
            if f.kind == "acceptance_regression"
            and f.evidence["tau"] == tau
            and f.deployment in (incident["deployment"], out.stem)  # a vLLM log is named after its file
            and f.since is not None
        ]
        offsets = [abs((f.since - start).total_seconds()) / 3600 for f in hits if f.since is not None]
        result["detected"] = bool(hits)
        result["offset_h"] = min(offsets) if offsets else None  # hours between the rollout and the split
        result["findings"] = len(found) - min(len(hits), 1)  # the others are false alarms
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=100)
    ap.add_argument("--requests", type=int, default=6000)
    ap.add_argument("--days", type=float, default=3.0)
    ap.add_argument("--formats", nargs="+", default=["vllm", "prometheus"])
    args = ap.parse_args()
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in args.formats:
            healthy_alarms = regression_alarms = detected = 0
            offsets: list[float] = []
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                root = Path(tmp) / f"{fmt}-{seed}"
                root.mkdir()
                h = run(root, "healthy", fmt, seed, args.requests, args.days)
                r = run(root, "regression", fmt, seed, args.requests, args.days)
                healthy_alarms += h["findings"] > 0
                regression_alarms += r["findings"] > 0
                detected += bool(r["detected"])
                if r["offset_h"] is not None:
                    offsets.append(r["offset_h"])
                print(f"{fmt} seed {seed}: healthy {h['findings']} findings; regression detected "
                      f"{r['detected']} (split {r['offset_h']} h from the rollout), {r['findings']} other findings",
                      file=sys.stderr, flush=True)  # fmt: skip
            within = sum(o <= 1 for o in offsets)
            worst = f"{max(offsets):.1f} h" if offsets else "-"
            rows.append((fmt, args.seeds, healthy_alarms, detected, within, worst, regression_alarms))
    print(
        f"{args.requests} requests over {args.days:g} days, seeds {args.first_seed}..{args.first_seed + args.seeds - 1}"
    )
    print(
        "| format | runs | healthy runs with a false alarm | rollouts detected | split within 1 h | farthest split "
        "| regression runs with another finding |"
    )
    print("|---|---|---|---|---|---|---|")
    for fmt, n, healthy_alarms, detected, within, worst, regression_alarms in rows:
        print(
            f"| {fmt} | {n} | {healthy_alarms} of {n} | {detected} of {n} | {within} of {detected} | {worst} "
            f"| {regression_alarms} of {n} |"
        )
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
