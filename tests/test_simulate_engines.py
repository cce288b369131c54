"""Engine-style outputs: lines have the engines' exact shapes (docs: engine-formats.md) and carry the simulated
counts, checked with regular expressions independent of specdiag's parsers."""

from __future__ import annotations

import re

import pytest

from specdiag.simulate import simulate

ANSI = re.compile(r"\x1b\[[0-9;]*m")
VLLM = re.compile(r"^(\(APIServer pid=\d+\) )?INFO (\d\d-\d\d \d\d:\d\d:\d\d) \[[\w.]+:\d+\] (.*)$")
ENGINE = re.compile(
    r"^Engine (\d{3}): Avg prompt throughput: [\d.]+ tokens/s, Avg generation throughput: [\d.]+ tokens/s, "
    r"Running: \d+ reqs, Waiting: \d+ reqs, GPU KV cache usage: [\d.]+%, Prefix cache hit rate: [\d.]+%$"
)
SPEC = re.compile(
    r"^SpecDecoding metrics: Mean acceptance length: (\d+\.\d\d), Accepted throughput: (\d+\.\d\d) tokens/s, "
    r"Drafted throughput: (\d+\.\d\d) tokens/s, Accepted: (\d+) tokens, Drafted: (\d+) tokens, "
    r"Per-position acceptance rate: ((?:\d\.\d{3}, )*\d\.\d{3}), Avg Draft acceptance rate: (\d+\.\d)%$"
)
SGLANG = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) DP(\d+) TP0\] Decode batch, #running-req: \d+, #token: \d+, "
    r"token usage: \d\.\d\d, accept len: (\d+\.\d\d), accept rate: (\d\.\d\d), cuda graph: True, "
    r"gen throughput \(token/s\): [\d.]+, #queue-req: \d+$"
)
PROM = re.compile(
    r'^(vllm:[a-z_]+)\{model_name="([\w-]+)",engine="0"(?:,position="(\d+)")?\} ([\d.e+]+) (\d+)$'
)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[str], dict]]:
    root = tmp_path_factory.mktemp("engines")
    result = {}
    for fmt in ("vllm", "sglang", "prometheus"):
        truth = simulate(root / fmt, scenario="mixed", requests=800, days=1.0, seed=3, fmt=fmt)
        result[fmt] = ((root / fmt).read_text(encoding="utf-8").splitlines(), truth)
    return result


def test_vllm_lines_have_the_v1_shape_and_sum_to_the_simulated_counts(outputs) -> None:
    lines, truth = outputs["vllm"]
    assert truth["output"]["lines"] == len(lines)
    accepted = drafted = 0
    previous_engine = None
    spec_lines = 0
    for raw in lines:
        line = ANSI.sub("", raw)
        m = VLLM.match(line)
        if not m:
            assert "POST /v1/" in line  # the only other lines: access-log noise
            continue
        message = m.group(3)
        if e := ENGINE.match(message):
            previous_engine = int(e.group(1))
        elif s := SPEC.match(message):
            assert previous_engine is not None  # each SpecDecoding line follows its Engine line
            acc, dr = int(s.group(4)), int(s.group(5))
            rates = [float(r) for r in s.group(6).split(", ")]
            assert rates == sorted(rates, reverse=True)  # unconditional per-position rates never increase
            # MAL = 1 + accepted / drafts, and the per-position rates sum to accepted / drafts (up to rounding)
            assert abs(sum(rates) - (float(s.group(1)) - 1)) <= 0.0005 * len(rates) + 0.005 + 1e-9
            assert abs(float(s.group(7)) - 100 * acc / dr) <= 0.05 + 1e-9
            accepted, drafted, spec_lines = accepted + acc, drafted + dr, spec_lines + 1
            previous_engine = None
    assert (accepted, drafted) == (truth["generated"]["accepted"], truth["generated"]["drafted"])
    assert spec_lines == truth["output"]["intervals"]


def test_sglang_decode_lines_carry_the_mean_acceptance_length(outputs) -> None:
    lines, truth = outputs["sglang"]
    decode = [m for m in map(SGLANG.match, lines) if m]
    assert len(decode) == truth["output"]["intervals"] > 0
    other = [x for x in lines if not SGLANG.match(x)]
    assert all(" Prefill batch, #new-seq: " in x for x in other)
    # a line covers #running-req x 40 verify steps: its accept len weighted by #running-req gives each deployment's
    # MAL (up to the 2-decimal rounding and the rounding of #running-req)
    assert {int(m.group(2)) for m in decode} <= {0, 1, 2}
    for e, dep in enumerate(truth["deployments"]):
        mine = [m for m in decode if int(m.group(2)) == e]
        running = [int(re.search(r"#running-req: (\d+)", m.string).group(1)) for m in mine]
        mal = sum(r * float(m.group(3)) for r, m in zip(running, mine)) / sum(running)
        counts = truth["generated"]["by_deployment"][dep["name"]]
        assert mal == pytest.approx(1 + counts["accepted"] / counts["verify_steps"], abs=0.01)


def test_prometheus_counters_are_cumulative_and_add_up_to_the_totals(outputs) -> None:
    """Counters only grow, except at a restart (a tau change: `_created` moves, and the per-position counters are
    those of the new tau); their increments, a restart counting from 0, add up to the simulated counts."""
    lines, truth = outputs["prometheus"]
    last: dict[tuple[str, str, str | None], float] = {}
    grown: dict[tuple[str, str, str | None], float] = {}
    created: dict[str, set[str]] = {}
    positions: dict[tuple[str, int], set[str]] = {}
    scrape_times = set()
    for line in lines:
        if line.startswith("#"):
            assert line.startswith(("# HELP vllm:", "# TYPE vllm:"))
            continue
        m = PROM.match(line)
        assert m, line
        name, model, pos, value, ts = m.groups()
        scrape_times.add(int(ts))
        if name.endswith("_created"):
            created.setdefault(model, set()).add(value)
            continue
        if pos is not None:
            positions.setdefault((model, int(ts)), set()).add(pos)
        key, v = (name, model, pos), float(value)
        before = last.get(key, 0.0)
        grown[key] = grown.get(key, 0.0) + (v - before if v >= before else v)  # a drop: restarted from 0
        last[key] = v
    assert len(scrape_times) == truth["output"]["intervals"] == 288  # one scrape each 5 minutes for a day
    taus = {d["name"]: d["tau"] for d in truth["deployments"]}
    for dep, counts in truth["generated"]["by_deployment"].items():
        for name, total in (
            ("vllm:spec_decode_num_drafts_total", "verify_steps"),
            ("vllm:spec_decode_num_draft_tokens_total", "drafted"),
            ("vllm:spec_decode_num_accepted_tokens_total", "accepted"),
        ):
            assert grown[(name, dep, None)] == counts[total]
        per_pos = sum(v for (n, m, _p), v in grown.items() if n.endswith("per_pos_total") and m == dep)
        assert per_pos == counts["accepted"]  # sum over positions of steps reaching it = accepted tokens
        seen = {len(p) for (m, _t), p in positions.items() if m == dep}
        assert taus[dep] in seen and len(seen) == len(created[dep])  # one tau per (re)start
    assert any(len(c) > 1 for c in created.values())  # the mixed scenario's tau change restarts one server
