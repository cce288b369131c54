"""Replay benchmark: our loop vs transformers' assisted generation vs the target alone, and acceptance by domain.

Same pair, prompts and tau; greedy; batch 1 on the CPU by default (--device cuda on a GPU: CUDA-synchronised wall
times). Each timing is the median of --repeats runs after a warm-up; the four ways of generating run in turn
within each repeat, so a load change on a shared machine hits them alike. --batch-sizes 1,8,16 adds the batched loop's
throughput over all prompts (tokens per second at each batch size, every row checked equal to its batch-1 run).
The measured speedup (target alone / speculative, wall time per generated token) is printed next to the speedup
predicted by specdiag.speedup from the measured alpha (from the mean acceptance length) and the measured costs.

    .venv/bin/python benchmarks/replay.py                # demo pair; prints markdown tables and a JSON line
    .venv/bin/python benchmarks/replay.py --target DIR --draft DIR --tau 4 --max-new-tokens 64
    .venv/bin/python benchmarks/replay.py --acceptance-only    # only the acceptance-by-domain table (seconds)
    python benchmarks/replay.py --device cuda --batch-sizes 1,4,16   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

# `python benchmarks/replay.py` puts benchmarks/ first on sys.path, where this file would shadow the replay package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

PROMPTS = {
    "python code": [
        'def read_config(path):\n    """Read a config file and return a dict."""\n    with open(path) as f:\n',
        "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n",
        "import os\nimport sys\n\n\ndef main(argv=None):\n    if argv is None:\n        argv = sys.argv[1:]\n",
        "    for key, value in sorted(mapping.items()):\n        if value is None:\n            continue\n",
    ],
    "english prose": [
        "The committee met on a cold morning to discuss the future of the old library, which had been",
        "When she finally reached the top of the hill, the whole valley lay below her, quiet and green, and",
        "Most people agree that a good night's sleep matters, yet few of us manage to keep regular hours",
        "The history of the river is, in many ways, the history of the town that grew along its banks",
    ],
    "other scripts": [
        "Съешь же ещё этих мягких французских булок, да выпей чаю. Москва — столица России, и",
        "東京は日本の首都であり、世界で最も人口の多い都市圏の一つです。多くの人々が",
        "Η γρήγορη καφέ αλεπού πηδάει πάνω από το τεμπέλικο σκυλί. Η Αθήνα είναι",
        "مرحبا بكم في هذا المكان الجميل، حيث يمكنكم الاستمتاع بالطبيعة و",
    ],
}


def random_byte_prompts(n: int = 4, length: int = 64, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=length).tolist() for _ in range(n)]


def median_ms(fn, repeats: int, sync=lambda: None) -> float:
    """Median wall ms of fn after one warm-up; sync() waits for queued GPU work (a no-op on the CPU)."""
    return interleaved_ms({"fn": fn}, repeats, sync)["fn"]


def interleaved_ms(fns: dict, repeats: int, sync=lambda: None) -> dict[str, float]:
    """Median wall ms of each fn after one warm-up each, the fns run in turn within every repeat: a load change on
    a shared machine then hits all of them alike, so their ratios stay comparable."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats + 1):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            if r:  # repeat 0 is the warm-up
                times[name].append((time.perf_counter() - t0) * 1000.0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="demo")
    parser.add_argument("--draft", default="demo")
    parser.add_argument("--tau", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch-sizes", default="", help="comma-separated: batched-loop throughput table")
    parser.add_argument(
        "--acceptance-only", action="store_true", help="skip the timings and the HF comparison"
    )
    args = parser.parse_args()

    import torch

    from replay.engine import speculative_generate, target_generate
    from replay.models import load_pair
    from replay.profile import profile_costs
    from replay.rules import Rule
    from replay.sampling import Sampling
    from specdiag.speedup import CostModel, alpha_from_mal, speedup

    torch.set_num_threads(args.threads)
    pair = load_pair(args.target, args.draft, device=args.device, dtype=args.dtype, progress=True)
    sync = torch.cuda.synchronize if args.device == "cuda" else lambda: None
    timed = lambda fn: median_ms(fn, args.repeats, sync)  # noqa: E731
    tok = pair.tokenizer
    encode = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    domains = {name: [encode(t) for t in texts] for name, texts in PROMPTS.items()}
    domains["random bytes"] = random_byte_prompts()
    n_new = args.max_new_tokens
    common = {
        "max_new_tokens": n_new,
        "sampling": Sampling(),
        "vocab_size": pair.vocab_size,
        "eos_token_id": None,
    }

    # HF assisted generation with the same, fixed tau (no dynamic schedule, no confidence early stop)
    pair.draft.generation_config.num_assistant_tokens = args.tau
    pair.draft.generation_config.num_assistant_tokens_schedule = "constant"
    pair.draft.generation_config.assistant_confidence_threshold = 0.0
    for model in (pair.target, pair.draft):
        model.generation_config.eos_token_id = None

    def hf(ids: list[int], assisted: bool) -> list[int]:
        extra = {"assistant_model": pair.draft} if assisted else {}
        out = pair.target.generate(
            torch.tensor([ids], device=pair.target.device),
            do_sample=False,
            max_new_tokens=n_new,
            min_new_tokens=n_new,
            **extra,
        )
        return out[0, len(ids) :].tolist()

    rows, timing = [], []
    with torch.inference_mode():
        for domain, prompts in domains.items():
            drafted = accepted = verify_steps = 0
            for ids in prompts:
                g = speculative_generate(
                    pair.target, pair.draft, ids, tau=args.tau, rule=Rule(), generator=None, **common
                )
                drafted += sum(s.drafted for s in g.steps)
                accepted += sum(s.accepted for s in g.steps)
                verify_steps += sum(1 for s in g.steps if s.drafted)
                if not args.acceptance_only:
                    same = g.token_ids == hf(ids, True) == hf(ids, False)
                    rows.append({"domain": domain, "identical_to_hf": same})
            mal = 1 + accepted / verify_steps
            timing.append({"domain": domain, "acceptance_rate": accepted / drafted, "mean_acceptance_length": mal,
                           "alpha": alpha_from_mal(mal, args.tau)})  # fmt: skip
        if args.acceptance_only:
            print_acceptance(pair, args, timing)
            return

        costs = profile_costs(pair, tau_max=args.tau, batch_sizes=(1,), repeats=7)
        n = np.array([r["n_tokens"] for r in costs], dtype=float)
        t = np.array([r["target_ms"] for r in costs])
        compute_ms, floor_ms = np.polyfit(n, t, 1)
        cost = CostModel(floor_ms=float(floor_ms), compute_ms=float(max(compute_ms, 0.0)),
                         draft_ms_per_token=costs[0]["draft_ms_per_token"])  # fmt: skip

        for entry in timing:
            prompts = domains[entry["domain"]]
            totals = {"ours": 0.0, "assisted": 0.0, "alone_hf": 0.0, "alone_ours": 0.0}
            for ids in prompts:
                ms = interleaved_ms({
                    "ours": lambda ids=ids: speculative_generate(pair.target, pair.draft, ids, tau=args.tau,
                                                                 rule=Rule(), generator=None, **common),
                    "assisted": lambda ids=ids: hf(ids, True),
                    "alone_hf": lambda ids=ids: hf(ids, False),
                    "alone_ours": lambda ids=ids: target_generate(pair.target, ids, generator=None, **common),
                }, args.repeats, sync)  # fmt: skip
                totals = {k: totals[k] + ms[k] for k in totals}
            ours, assisted, alone_hf, alone_ours = totals.values()
            entry.update(
                ours_ms=ours, assisted_ms=assisted, target_alone_hf_ms=alone_hf, target_alone_ours_ms=alone_ours,
                ours_vs_assisted=assisted / ours, measured_speedup=alone_hf / ours,
                predicted_speedup=speedup(entry["alpha"], args.tau, cost),
            )  # fmt: skip

    where = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {args.threads} threads"
    print(f"pair: {pair.target_name} / {pair.draft_name}; tau {args.tau}; {n_new} new tokens; {where}; "
          f"{args.dtype}; {len(domains['python code'])} prompts per domain; median of {args.repeats}")  # fmt: skip
    print(f"costs (ms): target floor {cost.floor_ms:.3f} + {cost.compute_ms:.4f} per token; "
          f"draft {cost.draft_ms_per_token:.3f} per token; c = {cost.cost_ratio():.3f}")  # fmt: skip
    print(
        f"outputs identical to HF greedy and HF assisted: {sum(r['identical_to_hf'] for r in rows)}/{len(rows)}\n"
    )
    print(
        "| domain | acceptance_rate | MAL | alpha | ours ms | HF assisted ms | target alone (HF) ms "
        "| assisted / ours | measured speedup | predicted speedup |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for e in timing:
        print(f"| {e['domain']} | {e['acceptance_rate']:.3f} | {e['mean_acceptance_length']:.2f} | {e['alpha']:.3f} "
              f"| {e['ours_ms']:.0f} | {e['assisted_ms']:.0f} | {e['target_alone_hf_ms']:.0f} "
              f"| {e['ours_vs_assisted']:.2f} | {e['measured_speedup']:.2f} | {e['predicted_speedup']:.2f} |")  # fmt: skip
    batched = []
    if args.batch_sizes:
        everything = [ids for prompts in domains.values() for ids in prompts]
        batched = batch_throughput(pair, everything, args, common, timed)
    print("\n" + json.dumps({"device": where, "dtype": args.dtype, "cost": cost.to_dict(), "domains": timing,
                             "batched": batched}))  # fmt: skip


def batch_throughput(pair, prompts: list[list[int]], args, common: dict, timed) -> list[dict]:
    """Generated tokens per second of the batched loop over all prompts, run in chunks of each batch size; every
    row is checked equal to its batch-1 run (greedy: the same tokens) before it is timed."""
    import torch

    from replay.batch import speculative_generate_batch
    from replay.engine import speculative_generate
    from replay.rules import Rule

    def run(size: int) -> list:
        out = []
        with torch.inference_mode():
            for i in range(0, len(prompts), size):
                out += speculative_generate_batch(pair.target, pair.draft, prompts[i : i + size], tau=args.tau,
                                                  rule=Rule(), generators=None, **common)  # fmt: skip
        return out

    with torch.inference_mode():
        single = [speculative_generate(pair.target, pair.draft, ids, tau=args.tau, rule=Rule(), generator=None,
                                       **common).token_ids for ids in prompts]  # fmt: skip
    rows = []
    for size in [int(b) for b in args.batch_sizes.split(",")]:
        same = sum(g.token_ids == s for g, s in zip(run(size), single))
        ms = timed(lambda size=size: run(size))
        tokens = len(prompts) * args.max_new_tokens
        rows.append({"batch_size": size, "ms": ms, "tokens_per_s": tokens / ms * 1000.0,
                     "rows_equal_to_batch_1": same, "rows": len(prompts)})  # fmt: skip
    print(f"\nbatched loop over {len(prompts)} prompts ({args.max_new_tokens} new tokens each):\n")
    print(
        "| batch size | wall ms | generated tokens/s | rows equal to their batch-1 run |\n|---|---|---|---|"
    )
    base = rows[0]["tokens_per_s"]
    for r in rows:
        print(f"| {r['batch_size']} | {r['ms']:.0f} | {r['tokens_per_s']:.0f} ({r['tokens_per_s'] / base:.2f}x) "
              f"| {r['rows_equal_to_batch_1']}/{r['rows']} |")  # fmt: skip
    return rows


def print_acceptance(pair, args, timing: list[dict]) -> None:
    print(
        f"pair: {pair.target_name} / {pair.draft_name}; tau {args.tau}; {args.max_new_tokens} new tokens; greedy\n"
    )
    print("| domain | acceptance_rate | mean_acceptance_length | alpha |\n|---|---|---|---|")
    for e in timing:
        print(
            f"| {e['domain']} | {e['acceptance_rate']:.3f} | {e['mean_acceptance_length']:.2f} | {e['alpha']:.3f} |"
        )
    print("\n" + json.dumps({"domains": timing}))


if __name__ == "__main__":
    main()
