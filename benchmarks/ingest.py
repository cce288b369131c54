"""Benchmark `specdiag ingest` against polars alone, and its peak memory on a 5x larger file.

    .venv/bin/python benchmarks/ingest.py [--steps 1000000] [--big-factor 5] [--dup-store-steps 0]

1. Writes a trace file of ``--steps`` verify steps (requests of 40-160 nested steps with prompt and output text,
   every tenth request as flat step lines) with a seeded numpy generator.
2. Times the whole `specdiag ingest` process into a fresh database, and the whole process of polars alone reading
   the same file into Parquet (``pl.read_ndjson(...).write_parquet(...)``), in the same run; reports the ratio.
3. Writes a file ``--big-factor`` times larger and reports the peak RSS of the ingest process (target <= 2 GB).
   ``--big-prompt-words N`` gives each of its requests a prompt of N words instead of 20-200 (long RAG contexts:
   the request text is what DuckDB holds longest before writing it out).
4. With ``--dup-store-steps N``: ingests a second, new file into a store already holding N steps, to measure
   the anti-join dedupe against a large store.
5. With ``--baseline-tree DIR`` (a checkout of earlier code, e.g. ``git worktree add /tmp/base <commit>``): times
   that checkout's ``specdiag ingest`` on the same file, in turn with the other two, so that load changes hit all
   three alike.
6. Times both processes on a file of one request, to show the fixed cost of each (start-up, imports, creating
   the store) apart from the per-step cost.
7. With ``--small-files N``: cuts the first 5N lines of the trace file into N files of 5 lines each (a folder of
   rotated logs) and times one `specdiag ingest` of the folder against one of the same lines as a single file
   (each tree, in turn), to show the cost of each file.
8. With ``--file-sizes MB,...``: for each size, cuts the trace file into 16 files of about that size and times
   ``ingest_paths`` on the folder with every file read many to a transaction and with every file on its own, in
   turn: the measurement behind the size limit of the first (``ingest.SMALL_FILE_BYTES``).

Each measured process runs under a small wrapper whose only child it is, so ``RUSAGE_CHILDREN`` gives that
process's own peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
WORDS = "the a speculative draft token verify accept reject model batch cache latency of to and in".split()

_WRAP = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter(); rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "dt = time.perf_counter() - t\n"
    "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(rc, dt, u.ru_maxrss, u.ru_utime + u.ru_stime)\n"
)


def generate(
    path: Path, n_steps: int, seed: int, id_prefix: str = "r", prompt_words: int | None = None
) -> tuple[int, int]:
    """A realistic trace file of about ``n_steps`` steps; returns (requests, steps)."""
    rng = np.random.default_rng(seed)
    t0 = 1_760_000_000.0
    steps_done = requests = 0
    words = np.array(WORDS)
    with open(path, "w", encoding="utf-8") as f:
        while steps_done < n_steps:
            n = int(rng.integers(40, 161))
            tau = int(rng.choice([2, 3, 4, 5]))
            alpha = float(rng.uniform(0.5, 0.9))
            # accepted prefix length of each step: truncated geometric with per-token acceptance alpha
            accepted = np.minimum(rng.geometric(1 - alpha, n) - 1, tau)
            draft_ms = np.round(rng.gamma(4.0, 0.6, n), 3)
            verify_ms = np.round(rng.gamma(9.0, 2.5, n), 3)
            rid = f"{id_prefix}{requests:09d}"
            ts = t0 + requests * 0.37
            n_words = prompt_words or int(rng.integers(20, 200))
            prompt = " ".join(words[rng.integers(0, len(words), n_words)])
            output = " ".join(words[rng.integers(0, len(words), int(accepted.sum() + n))])
            head = (
                f'"request_id":"{rid}","ts":"{time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))}.{int(ts % 1 * 1000):03d}Z",'
                f'"deployment":"chat-{requests % 3}","target_model":"llama-70b@v3","draft_model":"llama-1b@v2",'
                f'"tau":{tau},"temperature":0.7,"top_p":0.95,"task":"{["chat", "code", "summarize"][requests % 3]}",'
                f'"prompt":{json.dumps(prompt)},"output":{json.dumps(output)},"prompt_tokens":{len(prompt) // 4},'
                f'"output_tokens":{int(accepted.sum() + n)},"latency_ms":{float(verify_ms.sum() + draft_ms.sum()):.3f},'
                f'"batch_size":{int(rng.integers(1, 65))}'
            )
            step_objs = [
                f'"step":{i},"drafted":{tau},"accepted":{int(a)},"draft_ms":{d},"verify_ms":{v}'
                for i, (a, d, v) in enumerate(zip(accepted.tolist(), draft_ms.tolist(), verify_ms.tolist()))
            ]
            if requests % 10 == 9:  # flat step lines
                f.write("{" + head + "}\n")
                f.writelines(f'{{"event":"step","request_id":"{rid}",{s}}}\n' for s in step_objs)
            else:
                f.write("{" + head + ',"steps":[' + ",".join("{" + s + "}" for s in step_objs) + "]}\n")
            steps_done += n
            requests += 1
    return requests, steps_done


def measure(cmd: list[str]) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MB, CPU seconds user + system over all threads) of ``cmd`` as its own process."""
    out = subprocess.run([PY, "-c", _WRAP, *cmd], capture_output=True, text=True, check=True).stdout.split()
    rc, seconds, rss_kb, cpu = int(out[0]), float(out[1]), int(out[2]), float(out[3])
    if rc != 0:
        raise SystemExit(f"command failed ({rc}): {' '.join(cmd)}")
    return seconds, rss_kb / 1024, cpu


def ingest_cmd(path: Path, db: Path, tree: Path = ROOT) -> list[str]:
    """`specdiag ingest` as `python -m specdiag` run in ``tree``: the package is imported from that checkout."""
    code = f"import os, runpy, sys; os.chdir({str(tree)!r}); sys.path.insert(0, ''); runpy.run_module('specdiag', run_name='__main__')"
    return [PY, "-c", code, "ingest", str(path), "--db", str(db), "--no-progress", "--json"]


def small_files(trace: Path, d: Path, n: int, repeat: int, baseline: Path | None) -> None:
    """A folder of ``n`` files of 5 lines each against the same lines as one file, best of ``repeat`` each."""
    folder, single = d / "small", d / "single.jsonl"
    folder.mkdir()
    with open(trace, encoding="utf-8") as src:
        lines = [src.readline() for _ in range(5 * n)]
    for i in range(n):
        (folder / f"part-{i:05d}.jsonl").write_text("".join(lines[5 * i : 5 * i + 5]), encoding="utf-8")
    single.write_text("".join(lines), encoding="utf-8")
    trees = [("this code", ROOT)] + ([("baseline tree", baseline.resolve())] if baseline is not None else [])
    for t, (name, tree) in enumerate(trees):
        t_folder = min(
            measure(ingest_cmd(folder, d / f"folder-{t}-{k}.duckdb", tree))[0] for k in range(repeat)
        )
        t_single = min(
            measure(ingest_cmd(single, d / f"single-{t}-{k}.duckdb", tree))[0] for k in range(repeat)
        )
        print(
            f"{name}: {n} files of 5 lines in {t_folder:.2f} s, the same lines as one file in {t_single:.2f} s: "
            f"{(t_folder - t_single) / (n - 1) * 1000:.1f} ms per additional file"
        )


def file_sizes(trace: Path, d: Path, mb: float, repeat: int) -> None:
    """16 files of about ``mb`` MB each (whole lines), ingested as a folder with and without small-file grouping."""
    folder = d / f"files-{mb}"
    folder.mkdir()
    with open(trace, "rb") as src:
        for i in range(16):
            (folder / f"part-{i:02d}.jsonl").write_bytes(src.read(int(mb * 2**20)) + src.readline())
    # ingest_paths with the size limit set (-1: every file on its own; 1 GB: every file read with others)
    code = (
        "import sys; from specdiag import ingest; ingest.SMALL_FILE_BYTES = int(sys.argv[3]); "
        "ingest.ingest_paths([sys.argv[1]], db=sys.argv[2], progress=False)"
    )
    grouped, single = [], []
    for k in range(repeat):
        grouped.append(
            measure([PY, "-c", code, str(folder), str(d / f"grouped-{mb}-{k}.duckdb"), str(2**30)])[0]
        )
        single.append(measure([PY, "-c", code, str(folder), str(d / f"alone-{mb}-{k}.duckdb"), "-1"])[0])
    print(
        f"16 files of {mb:g} MB: {min(grouped):.2f} s read many to a transaction, {min(single):.2f} s each on its own"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--big-factor", type=int, default=5)
    ap.add_argument("--big-prompt-words", type=int, help="words per prompt in the big file (default 20-200)")
    ap.add_argument("--dup-store-steps", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--baseline-tree", type=Path, help="a checkout of earlier code to time in the same run")
    ap.add_argument("--small-files", type=int, default=0, help="also time a folder of this many 5-line files")
    ap.add_argument(
        "--file-sizes", default="", help="MB,...: folders of 16 files of each size, grouped or not"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        trace = d / "trace.jsonl"
        reqs, steps = generate(trace, args.steps, args.seed)
        mb = trace.stat().st_size / 2**20
        print(f"file: {reqs:,} requests, {steps:,} steps, {mb:.0f} MB")
        polars_cmd = [
            PY,
            "-c",
            f"import polars as pl; pl.read_ndjson({str(trace)!r}).write_parquet({str(d / 'p.parquet')!r})",
        ]
        # in turn, best of --repeat each: the machine may be shared
        runs_p, runs_i, runs_b = [], [], []
        for k in range(args.repeat):
            runs_p.append(measure(polars_cmd))
            runs_i.append(measure(ingest_cmd(trace, d / f"a{k}.duckdb")))
            if args.baseline_tree is not None:
                runs_b.append(measure(ingest_cmd(trace, d / f"base{k}.duckdb", args.baseline_tree.resolve())))
        t_polars, rss_polars, cpu_polars = min(runs_p)
        t_ingest, rss_ingest, cpu_ingest = min(runs_i)
        print(
            f"polars read_ndjson -> parquet: {t_polars:.2f} s wall, {cpu_polars:.2f} s CPU, peak RSS {rss_polars:.0f} MB"
        )
        print(
            f"specdiag ingest:               {t_ingest:.2f} s wall, {cpu_ingest:.2f} s CPU, peak RSS {rss_ingest:.0f} MB"
        )
        if runs_b:
            t_base, rss_base, cpu_base = min(runs_b)
            print(
                f"baseline tree ingest:          {t_base:.2f} s wall, {cpu_base:.2f} s CPU, peak RSS {rss_base:.0f} MB "
                f"({t_base / t_polars:.2f}x polars wall)"
            )
        for name, runs in (("polars", runs_p), ("ingest", runs_i), ("baseline", runs_b)):
            if runs:
                print(
                    f"  {name}: median {statistics.median(r[0] for r in runs):.2f} s wall, "
                    f"{statistics.median(r[2] for r in runs):.2f} s CPU; wall per run: "
                    f"{', '.join(f'{r[0]:.2f}' for r in runs)} s"
                )
        print(
            f"ratio ingest / polars: {t_ingest / t_polars:.2f}x wall, {cpu_ingest / cpu_polars:.2f}x CPU (target <= 1.5x)"
        )
        # the fixed cost of each process: the same commands on a file of one request
        tiny = d / "tiny.jsonl"
        with open(trace, encoding="utf-8") as src:
            tiny.write_text(src.readline(), encoding="utf-8")
        tiny_cmd = [PY, "-c", polars_cmd[2].replace(str(trace), str(tiny))]
        fixed_p = min(measure(tiny_cmd) for _ in range(args.repeat))
        fixed_i = min(measure(ingest_cmd(tiny, d / f"tiny{k}.duckdb")) for k in range(args.repeat))
        print(
            f"fixed cost (a file of one request): polars {fixed_p[0]:.2f} s wall, ingest {fixed_i[0]:.2f} s wall; "
            f"per-step part: polars {t_polars - fixed_p[0]:.2f} s, ingest {t_ingest - fixed_i[0]:.2f} s "
            f"({(t_ingest - fixed_i[0]) / (t_polars - fixed_p[0]):.2f}x)"
        )
        if args.small_files > 0:
            small_files(trace, d, args.small_files, args.repeat, args.baseline_tree)
        for mb in [float(x) for x in args.file_sizes.split(",") if x]:
            file_sizes(trace, d, mb, args.repeat)
        if args.big_factor > 0:
            big = d / "big.jsonl"
            breqs, bsteps = generate(
                big,
                args.steps * args.big_factor,
                args.seed + 1,
                id_prefix="b",
                prompt_words=args.big_prompt_words,
            )
            trace.unlink()
            bmb = big.stat().st_size / 2**20
            t_big, rss_big, _ = measure(ingest_cmd(big, d / "b.duckdb"))
            print(f"big file: {breqs:,} requests, {bsteps:,} steps, {bmb:.0f} MB")
            print(f"specdiag ingest big: {t_big:.2f} s, peak RSS {rss_big:.0f} MB (target <= 2048 MB)")
            big.unlink()
        if args.dup_store_steps > 0:
            store = d / "s.duckdb"
            base = d / "base.jsonl"
            generate(base, args.dup_store_steps, args.seed + 2, id_prefix="s")
            measure(ingest_cmd(base, store))
            base.unlink()
            new = d / "new.jsonl"
            generate(new, args.steps, args.seed + 3, id_prefix="n")
            t_new = measure(ingest_cmd(new, store))[0]
            t_fresh = measure(ingest_cmd(new, d / "fresh.duckdb"))[0]
            print(
                f"{args.steps:,} new steps into a store of {args.dup_store_steps:,} steps: {t_new:.2f} s "
                f"(into an empty store: {t_fresh:.2f} s)"
            )
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")


if __name__ == "__main__":
    main()
