"""Benchmark `specdiag ingest` on engine logs and metrics: lines per second for each format.

    .venv/bin/python benchmarks/formats.py [--lines 20000] [--seed 0]

Writes one file of about ``--lines`` lines per format with a seeded numpy generator (vLLM V1 log with two DP
engines and access-log noise, vLLM V0 cumulative log with stage times, SGLang log, Prometheus scrapes with
timestamps, vLLM per-request JSON), then times the whole `specdiag ingest` process for each into a fresh database
and reports lines/s and the windows or requests stored. A second run of the same files checks that re-ingest adds
nothing (and times it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 7, 20)
ANSI = "\x1b[1;36m(APIServer pid=2187)\x1b[0;0m "


def _counts(rng: np.random.Generator, k: int, steps: int) -> tuple[int, np.ndarray]:
    """accepted total and reached[i] (steps whose accepted count reached i+1) for `steps` verify steps."""
    accepted = np.minimum(rng.geometric(1 - rng.uniform(0.55, 0.85), steps) - 1, k)
    reached = np.array([(accepted > i).sum() for i in range(k)])
    return int(accepted.sum()), reached


def vllm_v1(path: Path, n: int, rng: np.random.Generator) -> None:
    k, lines, t = 3, [], T0
    while len(lines) < n:
        t += timedelta(seconds=5)
        for engine in (0, 1):
            steps = int(rng.integers(200, 2000))
            acc, reached = _counts(rng, k, steps)
            stamp = f"INFO {t:%m-%d %H:%M:%S}"
            lines.append(f'{ANSI}INFO:     127.0.0.1:5000 - "POST /v1/completions HTTP/1.1" 200 OK')
            lines.append(
                f"{ANSI}{stamp} [loggers.py:123] Engine {engine:03d}: Avg prompt throughput: 10.0 tokens/s, "
                f"Avg generation throughput: {steps / 10:.1f} tokens/s, Running: 12 reqs, Waiting: 0 reqs, "
                "GPU KV cache usage: 5.0%, Prefix cache hit rate: 0.0%"
            )
            rates = ", ".join(f"{r / steps:.3f}" for r in reached)
            lines.append(
                f"{ANSI}{stamp} [metrics.py:96] SpecDecoding metrics: Mean acceptance length: {1 + acc / steps:.2f}, "
                f"Accepted throughput: {acc / 10:.2f} tokens/s, Drafted throughput: {k * steps / 10:.2f} tokens/s, "
                f"Accepted: {acc} tokens, Drafted: {k * steps} tokens, Per-position acceptance rate: {rates}, "
                f"Avg Draft acceptance rate: {100 * acc / (k * steps):.1f}%"
            )
    path.write_text("\n".join(lines[:n]) + "\n")


def vllm_v0(path: Path, n: int, rng: np.random.Generator) -> None:
    k, lines, t, steps, acc = 4, [], T0, 0, 0
    while len(lines) < n:
        t += timedelta(seconds=5)
        more = int(rng.integers(100, 1000))
        steps, acc = steps + more, acc + _counts(rng, k, more)[0]
        stamp = f"INFO {t:%m-%d %H:%M:%S}"
        lines.append(
            f"{stamp} [spec_decode_worker.py:1100] SpecDecodeWorker stage times: "
            f"average_time_per_proposal_tok_ms={rng.uniform(1, 3):.2f} scoring_time_ms={rng.uniform(15, 25):.2f} "
            f"verification_time_ms={rng.uniform(0.5, 1.5):.2f}"
        )
        lines.append(
            f"{stamp} [metrics.py:489] Speculative metrics: Draft acceptance rate: {acc / (k * steps):.3f}, "
            f"System efficiency: {(acc + steps) / (steps * (k + 1)):.3f}, Number of speculative tokens: {k}, "
            f"Number of accepted tokens: {acc}, Number of draft tokens: {k * steps}, "
            f"Number of emitted tokens: {acc + steps}."
        )
    path.write_text("\n".join(lines[:n]) + "\n")


def sglang(path: Path, n: int, rng: np.random.Generator) -> None:
    lines, t = [], T0
    while len(lines) < n:
        t += timedelta(seconds=2)
        lines.append(
            f"[{t:%Y-%m-%d %H:%M:%S} TP0] Prefill batch. #new-seq: 1, #new-token: 300, #cached-token: 0"
        )
        lines.append(
            f"[{t:%Y-%m-%d %H:%M:%S} DP{int(rng.integers(0, 2))} TP0] Decode batch, #running-req: "
            f"{int(rng.integers(1, 64))}, #token: 9000, token usage: 0.05, accept len: {rng.uniform(1.5, 3.5):.2f}, "
            f"accept rate: {rng.uniform(0.3, 0.8):.2f}, cuda graph: True, gen throughput (token/s): 900.00, "
            "#queue-req: 0"
        )
    path.write_text("\n".join(lines[:n]) + "\n")


def prometheus(path: Path, n: int, rng: np.random.Generator) -> None:
    k, lines, t = 3, [], T0
    totals = np.zeros(2 + k)  # cumulative drafts, accepted, reached per position
    while len(lines) < n:
        t += timedelta(seconds=15)
        ms = int(t.timestamp() * 1000)
        steps = int(rng.integers(500, 5000))
        acc, reached = _counts(rng, k, steps)
        totals += [steps, acc, *reached]
        labels = 'model_name="m",engine="0"'
        lines.append("# TYPE vllm:spec_decode_num_drafts_total counter")
        lines.append(f"vllm:spec_decode_num_drafts_total{{{labels}}} {totals[0]} {ms}")
        lines.append(f"vllm:spec_decode_num_drafts_created{{{labels}}} 1784505600.0 {ms}")
        lines.append(f"vllm:spec_decode_num_draft_tokens_total{{{labels}}} {k * totals[0]} {ms}")
        lines.append(f"vllm:spec_decode_num_accepted_tokens_total{{{labels}}} {totals[1]} {ms}")
        for i in range(k):
            per_pos = f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{{labels},position="{i}"}}'
            lines.append(f"{per_pos} {totals[2 + i]} {ms}")
    path.write_text("\n".join(lines[:n]) + "\n")


def vllm_request(path: Path, n: int, rng: np.random.Generator) -> None:
    k, lines = 3, []
    for i in range(n):
        steps = int(rng.integers(5, 200))
        accepted = np.minimum(rng.geometric(1 - rng.uniform(0.55, 0.85), steps) - 1, k)
        hist = np.bincount(accepted, minlength=k + 1).tolist()
        spec = {
            "num_spec_steps": steps,
            "num_draft_tokens": k * steps,
            "num_accepted_draft_tokens": int(accepted.sum()),
            "num_spec_tokens": k,
            "acceptance_histogram": hist,
            "mean_acceptance_length": round(1 + accepted.sum() / steps, 3),
        }
        record = {
            "id": f"cmpl-{i}",
            "created": 1784505600 + i,
            "model": "m",
            "metrics": {"speculative_decoding": spec},
        }
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")


WRITERS: dict[str, Callable[[Path, int, np.random.Generator], None]] = {
    "vllm-v1.log": vllm_v1,
    "vllm-v0.log": vllm_v0,
    "sglang.log": sglang,
    "scrapes.prom": prometheus,
    "vllm-requests.jsonl": vllm_request,
}


def ingest(path: Path, db: Path) -> tuple[float, dict]:
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "specdiag", "ingest", str(path), "--db", str(db), "--no-progress", "--json"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    return time.perf_counter() - t, json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for name, write in WRITERS.items():
            path, db = Path(tmp) / name, Path(tmp) / f"{name}.duckdb"
            write(path, args.lines, rng)
            seconds, stats = ingest(path, db)
            again, stats2 = ingest(path, db)
            assert stats2["windows"] == stats2["requests"] == 0 and stats2["skipped"] == 1
            results.append(
                {
                    "file": name,
                    "lines": stats["lines"],
                    "seconds": round(seconds, 2),
                    "lines_per_s": round(stats["lines"] / seconds),
                    "windows": stats["windows"],
                    "requests": stats["requests"],
                    "rejected": stats["rejected"],
                    "reingest_seconds": round(again, 2),
                }
            )
            print(json.dumps(results[-1]), flush=True)


if __name__ == "__main__":
    main()
