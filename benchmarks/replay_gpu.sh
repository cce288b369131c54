#!/usr/bin/env bash
# Replay's CUDA path, end to end, on a machine with one NVIDIA GPU (run from the repository root):
#
#     benchmarks/replay_gpu.sh TARGET_DIR DRAFT_DIR OUT_DIR
#
# 1. the replay tests' assertions on CUDA (SPECDIAG_TEST_DEVICE=cuda: tiny models, CUDA kernels, generators, events);
# 2. `specdiag replay --device cuda` on the pair: batch 1 against --batch-size 8, greedy and seeded sampling (every
#    row must equal its batch-1 run), with --save into a store; greedy in bf16 and fp16 (divergence verdicts);
# 3. `specdiag replay --profile-costs` on CUDA (the cost table recommend fits);
# 4. benchmarks/replay.py --device cuda: our loop vs transformers' assisted generation vs the target alone, and the
#    batched loop's throughput at several batch sizes.
# Each stage has its own time limit and writes its output under OUT_DIR, so a slow stage does not hide the others.
set -uo pipefail
target=$1 draft=$2 out=$3
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
device=${DEVICE:-cuda} new=${NEW:-64}  # DEVICE=cpu NEW=8: a quick rehearsal of this script on a CPU

[ "$device" = cuda ] && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
$py -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
  | tee -a "$out/gpu.txt"

echo "== 1. replay tests on CUDA"
SPECDIAG_TEST_DEVICE=$device timeout 240 $py -m pytest -q -p no:cacheprovider -x \
  tests/test_replay_engine.py tests/test_replay_batch.py tests/test_replay_rules.py 2>&1 | tee "$out/tests.txt"

echo "== 2. specdiag replay --device cuda, batch 1 vs 8"
$py - "$out/prompts.jsonl" <<'EOF'
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("bench_replay", "benchmarks/replay.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
with open(sys.argv[1], "w") as f:
    for domain, texts in bench.PROMPTS.items():
        for i, text in enumerate(texts):
            f.write(json.dumps({"prompt_id": f"{domain.split()[0]}-{i}", "prompt": text}) + "\n")
    for i, ids in enumerate(bench.random_byte_prompts()):
        f.write(json.dumps({"prompt_id": f"bytes-{i}", "prompt_ids": ids}) + "\n")
EOF
replay() {  # replay NAME ARGS...: JSON results into $out/NAME.json
  local name=$1
  shift
  timeout 120 $py -m specdiag replay --target "$target" --draft "$draft" --prompts "$out/prompts.jsonl" \
    --device "$device" --max-new-tokens "$new" --json "$@" >"$out/$name.json" 2>"$out/$name.err"
  echo "$name: exit $? $(tail -c 300 "$out/$name.err")"
}
replay greedy-b1 --db "$out/gpu.duckdb" --save
replay greedy-b8 --batch-size 8
replay sampled-b1 --temperature 0.8 --seed 3
replay sampled-b8 --temperature 0.8 --seed 3 --batch-size 8
replay sampled-b1-again --temperature 0.8 --seed 3
replay greedy-bf16 --dtype bfloat16
replay greedy-fp16 --dtype float16
$py - "$out" <<'EOF' | tee "$out/cli.txt"
import json, math, sys
out = sys.argv[1]
load = lambda name: json.load(open(f"{out}/{name}.json"))["results"]
for a, b in [("greedy-b1", "greedy-b8"), ("sampled-b1", "sampled-b8"), ("sampled-b1", "sampled-b1-again")]:
    x, y = load(a), load(b)
    same = sum(r["output_token_ids"] == s["output_token_ids"] and r["accepted"] == s["accepted"] for r, s in zip(x, y))
    print(f"{a} vs {b}: {same}/{len(x)} prompts with identical output and accepted counts")
print("greedy batch 1: prompt, acceptance_rate, MAL, draft_ms, verify_ms, target_only_ms, speedup, matches_target_only")
for r in load("greedy-b1"):
    ok = r["draft_ms"] > 0 and r["verify_ms"] > 0 and math.isfinite(r["speedup"])
    print(r["prompt_id"], f'{r["acceptance_rate"]:.3f} {r["mean_acceptance_length"]:.2f} {r["draft_ms"]:.1f}'
          f' {r["verify_ms"]:.1f} {r["target_only_ms"]:.1f} {r["speedup"]:.2f} {r["matches_target_only"]}',
          "" if ok else "BAD TIMING")
for name in ("greedy-bf16", "greedy-fp16"):  # half precision: divergences from the target alone, with verdicts
    rows = load(name)
    print(name, "matches_target_only", sum(r["matches_target_only"] for r in rows), "/", len(rows))
    for r in rows:
        if not r["matches_target_only"]:
            print("  ", r["prompt_id"], r["first_divergence"])
for r in load("sampled-b1"):
    print("sampled", r["prompt_id"], r["matches_target_only"], (r.get("first_divergence") or {}).get("verdict"),
          f'tv_max {r.get("tv_max")}')
EOF

echo "== 3. --profile-costs on CUDA"
timeout 120 $py -m specdiag replay --target "$target" --draft "$draft" --device "$device" --profile-costs \
  --db "$out/gpu.duckdb" --profile-batch-sizes 1,8,32,128 2>&1 | tail -n 20 | tee "$out/profile.txt"
timeout 60 $py -m specdiag sql --db "$out/gpu.duckdb" \
  "select batch_size, n_tokens, round(target_ms, 3) as target_ms, round(draft_ms_per_token, 3) as draft_ms
   from cost_profiles order by batch_size, n_tokens" 2>&1 | tee -a "$out/profile.txt"

echo "== 4. benchmarks/replay.py --device cuda"
timeout 240 $py benchmarks/replay.py --target "$target" --draft "$draft" --device "$device" --repeats 3 \
  --max-new-tokens "$new" --batch-sizes 1,4,16 2>&1 | grep -v Passing | tee "$out/bench.txt"
