"""Calibrate diagnose with the simulator: false alarms on healthy fleets, power on a small segment's drop.

    .venv/bin/python benchmarks/calibrate.py --seeds 20 [--requests 6000] [--power-requests 3000]
        [--code-share 0.12 0.24] [--drop 0.05] [--difficulty 35] [--incident-at 0.5] [--json out.json]

For each seed:
- healthy: the simulator's `healthy` scenario; a run is a false alarm when diagnose reports any
  acceptance_regression or fast_but_wrong finding;
- power: a two-deployment fleet (FLEET below) where a draft rollout at --incident-at (a fraction of the week: 0.5
  halfway, 6/7 at the start of the last day) lowers the true acceptance_rate of `main`/`code` by --drop (the
  first-position acceptance drop that does so is solved from the simulator's own pooled truth, ``a1_drop_for``);
  --code-share sets that segment's size (0.12 of 3000 requests: ~300 speculative requests in the week, ~150 each
  side of a drop at 0.5); --difficulty sets the per-request difficulty concentration k of both deployments
  (h = 2 Beta(k, k); 35 is the simulator's default, 6 the old, wider spread). A run detects the drop when diagnose
  reports an acceptance_regression on exactly that segment. Recorded per run: the segment's speculative requests
  before and after the incident start (both sides, so that either definition of "a segment with a few hundred
  requests" can be read off), the realised drop in acceptance_rate (accepted / drafted after vs before, from the
  store) and the standard deviation of the per-request acceptance_rate before it.

The numbers go to docs/diagnose.md (Calibration); tests/test_diagnose_calibration.py runs a few seeds of the same.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from specdiag import stats  # noqa: E402
from specdiag.diagnose import changepoint, data, diagnose  # noqa: E402
from specdiag.ingest import ingest_paths  # noqa: E402
from specdiag.simulate import simulate  # noqa: E402
from specdiag.simulate.acceptance import step_weighted_reach  # noqa: E402
from specdiag.simulate.config import TASK_DEFAULTS, Deployment  # noqa: E402
from specdiag.stats import Comparison  # noqa: E402
from specdiag.store import connect  # noqa: E402

# main gets ~90% of requests; its `code` task a share of those (the segment whose acceptance drops).
FLEET = """
[fleet]
requests = {requests}
days = 7

[[deployments]]
name = "main"
target_model = "llama-70b@v3"
draft_model = "llama-1b-draft@v7"
tau = 4
share = 0.9
batch_size = 16
floor_ms = 24.0
compute_ms = 0.06
draft_ms_per_token = 1.8
tasks = {{ chat = {chat}, summarize = {summarize}, translate = {translate}, code = {code} }}
difficulty = {difficulty}

[[deployments]]
name = "side"
target_model = "qwen-32b@v2"
draft_model = "qwen-0.5b-draft@v4"
tau = 6
share = 0.1
batch_size = 8
floor_ms = 14.0
compute_ms = 0.05
draft_ms_per_token = 0.9
tasks = {{ code = 0.8, chat = 0.2 }}
difficulty = {difficulty}
{incident}
"""
INCIDENT = """
[[incidents]]
kind = "draft_rollout"
deployment = "main"
task = "code"
start = "{start}"
acceptance_drop = {drop}
"""
ALARM_KINDS = ("acceptance_regression", "fast_but_wrong")
POWER_TAU = 4  # main's tau in FLEET


def true_rate(a1_drop: float, difficulty: float) -> float:
    """True pooled acceptance_rate of FLEET's main/code requests with first-position acceptance lowered by a1_drop.

    Per temperature T (the simulator's default mix, equal shares): a_1 = a_1(code) (1 - slope T) - a1_drop, pooled
    over difficulty with each request weighted by its expected verify steps (specdiag.simulate.acceptance), so the
    rate is sum_T sum_k W_T P_k / (tau sum_T W_T), k = 1..tau: accepted over drafted of the whole segment.
    """
    d = Deployment("main", "t", "d", POWER_TAU, 1.0, 1.0, 0.0, 0.0, 0.0, {"code": 1.0}, difficulty=difficulty)
    accepted = steps = 0.0
    for temperature, share in zip(d.temperatures, d.temperature_shares):
        a1 = d.task_alpha1("code") * (1 - d.temperature_slope * temperature) - a1_drop
        reach, w = step_weighted_reach(a1, d.decay, difficulty, TASK_DEFAULTS["code"]["output_tokens"])
        accepted += share * float(reach[POWER_TAU, 1 : POWER_TAU + 1].sum())
        steps += share * float(w[POWER_TAU])
    return accepted / (POWER_TAU * steps)


def a1_drop_for(rate_drop: float, difficulty: float) -> float:
    """The first-position acceptance drop that lowers main/code's true acceptance_rate by ``rate_drop``."""
    from scipy.optimize import brentq

    base = true_rate(0.0, difficulty)
    return float(brentq(lambda x: base - true_rate(x, difficulty) - rate_drop, 0.0, 0.5))


def _run(folder: Path, name: str, seed: int, **sim: Any) -> tuple[list, Any]:
    trace = folder / f"{name}-{seed}.jsonl"
    db = folder / f"{name}-{seed}.duckdb"
    truth = simulate(trace, seed=seed, **sim)
    ingest_paths([trace], db=db, progress=False)
    con = connect(db)
    try:
        return diagnose(con), (con, truth)
    finally:
        trace.unlink()


def healthy_run(folder: Path, seed: int, requests: int) -> dict[str, Any]:
    found, (con, _) = _run(folder, "healthy", seed, scenario="healthy", requests=requests)
    con.close()
    alarms = [f"{f.kind} {f.deployment} {f.segment}" for f in found if f.kind in ALARM_KINDS]
    return {"seed": seed, "false_alarms": alarms}


WEEK_START = datetime(2026, 11, 16)  # the simulator's default range: 7 days from here (UTC)


def incident_start(at: float) -> datetime:
    """The incident's start at fraction ``at`` of the week, on a whole minute."""
    return WEEK_START + timedelta(minutes=round(at * 7 * 24 * 60))


def power_run(
    folder: Path,
    seed: int,
    requests: int,
    drop: float,
    code_share: float,
    difficulty: float = 35.0,
    incident_at: float = 0.5,
) -> dict[str, Any]:
    config = folder / "power.toml"
    at = incident_start(incident_at)
    start = f"{at:%Y-%m-%dT%H:%M:%S}Z"
    rest = 1.0 - code_share  # the other tasks keep their proportions 0.5 : 0.3 : 0.2
    shares = {"chat": 0.5 * rest, "summarize": 0.3 * rest, "translate": 0.2 * rest, "code": code_share}
    config.write_text(
        FLEET.format(
            requests=requests,
            incident=INCIDENT.format(start=start, drop=a1_drop_for(drop, difficulty)),
            difficulty=difficulty,
            **shares,
        )
    )
    found, (con, _) = _run(folder, f"power{code_share}", seed, config=config)
    before, after, n_before, n_after, sd_before = con.execute(
        """
        select
            sum(accepted) filter (where ts < $at) / sum(drafted) filter (where ts < $at),
            sum(accepted) filter (where ts >= $at) / sum(drafted) filter (where ts >= $at),
            count(*) filter (where ts < $at),
            count(*) filter (where ts >= $at),
            stddev_samp(accepted / drafted) filter (where ts < $at)
        from requests
        where deployment = 'main' and task = 'code' and tau > 0
        """,
        {"at": at},
    ).fetchone()
    pooled, stratified = segment_comparisons(con, at)
    family = len(
        changepoint.detect(data.segments(con), data.config(con))
    )  # the tests Benjamini-Hochberg adjusts
    con.close()
    hits = [f for f in found if f.kind == "acceptance_regression"]
    return {
        "seed": seed,
        "detected": any(f.deployment == "main" and f.segment == {"task": "code"} for f in hits),
        "reported": [f"{f.deployment} {f.segment}" for f in hits],
        "false_alarms": [
            f"{f.kind} {f.deployment} {f.segment}"
            for f in found
            if f.kind in ALARM_KINDS and not (f.deployment == "main" and f.segment == {"task": "code"})
        ],
        "realised_drop": before - after,
        "requests_before": n_before,
        "requests_after": n_after,
        "request_sd_before": sd_before,
        # the standard error of the before/after difference at the incident start, with the segment's requests
        # pooled and within temperature buckets (what diagnose compares); the power arithmetic in docs/diagnose.md
        "se_pooled": pooled.se,
        "se_stratified": stratified.se,
        "realised_drop_stratified": -stratified.diff,
        "tests": family,
    }


def segment_comparisons(con: Any, at: datetime) -> tuple[Comparison, Comparison]:
    """main/code after vs before ``at``: pooled, and within temperature buckets (its strata: one task)."""
    rows = con.execute(
        """
        select
            temperature_bucket,
            ts >= $at as after,
            count(*)::double,
            sum(accepted)::double,
            sum(drafted)::double,
            sum(accepted::double * accepted),
            sum(accepted::double * drafted),
            sum(drafted::double * drafted)
        from request_facts
        where deployment = 'main' and task = 'code' and tau > 0 and drafted > 0
        group by all
        order by 1, 2
        """,
        {"at": at},
    ).fetchall()
    buckets = sorted({r[0] for r in rows})
    sides = np.zeros((2, 6, len(buckets)))
    for bucket, after, *sums in rows:
        sides[int(after), :, buckets.index(bucket)] = sums
    pooled = stats.compare(*(stats.ratio_from_sums(*side.sum(axis=1)) for side in sides))
    return pooled, stats.compare_stratified(sides[0], sides[1])


def calibrate(
    seeds: range,
    requests: int,
    power_requests: int,
    drop: float,
    code_shares: list[float],
    difficulty: float = 35.0,
    incident_at: float = 0.5,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        healthy = [healthy_run(folder, s, requests) for s in seeds] if requests > 0 else []
        power = {
            share: [power_run(folder, s, power_requests, drop, share, difficulty, incident_at) for s in seeds]
            for share in code_shares
        }
        seconds = time.perf_counter() - t0
    n = len(seeds)
    return {
        "seeds": n,
        "healthy_requests": requests,
        "power_requests": power_requests,
        "rate_drop": drop,
        "a1_drop": a1_drop_for(drop, difficulty),
        "difficulty": difficulty,
        "incident_at": incident_at,
        "false_alarm_rate": sum(bool(r["false_alarms"]) for r in healthy) / len(healthy) if healthy else None,
        "power": [
            {
                "code_share": share,
                "mean_segment_requests": sum(r["requests_before"] + r["requests_after"] for r in runs) / n,
                "mean_requests_before": sum(r["requests_before"] for r in runs) / n,
                "mean_requests_after": sum(r["requests_after"] for r in runs) / n,
                "mean_realised_drop": sum(r["realised_drop"] for r in runs) / n,
                "min_realised_drop": min(r["realised_drop"] for r in runs),
                "max_realised_drop": max(r["realised_drop"] for r in runs),
                "mean_request_sd": sum(r["request_sd_before"] for r in runs) / n,
                "mean_se_pooled": sum(r["se_pooled"] for r in runs) / n,
                "mean_se_stratified": sum(r["se_stratified"] for r in runs) / n,
                "tests": [min(r["tests"] for r in runs), max(r["tests"] for r in runs)],
                "detection_rate": sum(r["detected"] for r in runs) / n,
                "false_alarm_rate": sum(bool(r["false_alarms"]) for r in runs) / n,
            }
            for share, runs in power.items()
        ],
        "seconds": seconds,
        "runs": {"healthy": healthy, "power": {str(k): v for k, v in power.items()}},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--requests", type=int, default=6000, help="healthy fleet requests per run (0: skip)")
    ap.add_argument("--power-requests", type=int, default=3000, help="power fleet requests per run")
    ap.add_argument("--drop", type=float, default=0.05, help="drop in main/code's true acceptance_rate")
    ap.add_argument(
        "--code-share",
        type=float,
        nargs="*",
        default=[0.12, 0.24],
        help="segment shares of main (none: no power runs)",
    )
    ap.add_argument(
        "--difficulty",
        type=float,
        default=35.0,
        help="per-request difficulty concentration k of the power fleet",
    )
    ap.add_argument(
        "--incident-at",
        type=float,
        default=0.5,
        help="the power incident's start as a fraction of the week (0.5: halfway; 0.857: the last day)",
    )
    ap.add_argument("--json", type=Path, help="write every run's result here")
    args = ap.parse_args()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    if not 0.0 < args.incident_at < 1.0:
        ap.error("--incident-at must be inside the week, in (0, 1)")
    result = calibrate(
        seeds,
        args.requests,
        args.power_requests,
        args.drop,
        args.code_share,
        args.difficulty,
        args.incident_at,
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    summary = {k: v for k, v in result.items() if k != "runs"}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
