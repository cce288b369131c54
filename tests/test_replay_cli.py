"""`specdiag replay` end to end on a tiny saved pair: JSON keys, --save into the store, errors, import hygiene."""

from __future__ import annotations

import json
import subprocess
import sys

import duckdb
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from replay.demo_pair import VOCAB_SIZE, build_tokenizer

KEYS = {
    "prompt_id", "output_token_ids", "output_text", "steps", "drafted", "accepted", "acceptance_rate",
    "mean_acceptance_length", "draft_ms", "verify_ms", "target_only_ms", "speedup", "matches_target_only",
    "tv_max", "tv_mean",
}  # fmt: skip


@pytest.fixture(scope="module")
def pair_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    tokenizer = build_tokenizer()
    for name, seed, layers in (("target", 0, 2), ("draft", 1, 1)):
        config = LlamaConfig(
            vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.3,
            bos_token_id=None, eos_token_id=None, pad_token_id=257,
        )  # fmt: skip
        torch.manual_seed(seed)
        LlamaForCausalLM(config).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root / "target", root / "draft"


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    records = [
        {"prompt_id": "code", "prompt": "def add(a, b):\n    return", "request_id": "r-1"},
        {"prompt_id": "ids", "prompt_ids": [100, 101, 102], "tau": 2},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_json_output_has_exactly_the_documented_keys(run, pair_dirs, prompts):
    target, draft = pair_dirs
    result = run("replay", "--target", target, "--draft", draft, "--prompts", prompts, "--json",
                 "--max-new-tokens", 12, "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)["results"]
    assert [r["prompt_id"] for r in out] == ["code", "ids"]
    for r in out:
        assert set(r) == KEYS  # greedy + strict: matches the target alone, so no first_divergence
        assert r["matches_target_only"] is True and r["tv_max"] == 0.0
        assert len(r["output_token_ids"]) == 12
        assert r["steps"] <= 12 and 0 <= r["accepted"] <= r["drafted"]
    assert out[1]["drafted"] <= 2 * out[1]["steps"]  # the record's tau = 2 applies


def test_save_writes_runs_steps_and_tokens(run, pair_dirs, prompts, db):
    target, draft = pair_dirs
    result = run("replay", "--target", target, "--draft", draft, "--prompts", prompts, "--db", db, "--save",
                 "--max-new-tokens", 8, "--target-name", "tiny-t", "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "saved replay run" in " ".join(result.stderr.split())  # messages on stderr
    assert "│ yes" in result.stdout  # the table on stdout (matches the target alone)
    con = duckdb.connect(str(db), read_only=True)
    runs = con.execute(
        "select prompt_id, request_id, target, draft, drafted, accepted, steps from replay_runs order by prompt_id"
    ).fetchall()
    assert [(r[0], r[1], r[2], r[3]) for r in runs] == [
        ("code", "r-1", "tiny-t", "draft"),
        ("ids", None, "tiny-t", "draft"),
    ]
    for prompt_id, _, _, _, drafted, accepted, steps in runs:
        s = con.execute(
            "select count(*), sum(drafted), sum(accepted) from replay_steps where prompt_id = ?", [prompt_id]
        ).fetchone()
        assert s == (steps, drafted, accepted)
        t = con.execute(
            "select count(*), count(*) filter (where accepted) from replay_tokens where prompt_id = ?",
            [prompt_id],
        ).fetchone()
        assert t == (drafted, accepted)


def test_profile_costs_stores_a_cost_table(run, pair_dirs, db):
    target, draft = pair_dirs
    result = run("replay", "--target", target, "--draft", draft, "--db", db, "--profile-costs", "--json",
                 "--profile-tau-max", 2, "--profile-batch-sizes", "1,2", "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)["cost_profile"]) == 2 * 3
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute(
        "select batch_size, n_tokens, target_ms, draft_ms_per_token from cost_profiles"
    ).fetchall()
    assert sorted((b, n) for b, n, _, _ in rows) == [(b, n) for b in (1, 2) for n in (1, 2, 3)]
    assert all(t > 0 and d > 0 for _, _, t, d in rows)


def test_bad_prompt_line_is_a_one_line_input_error(run, pair_dirs, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt_id": 1, "prompt": "ok"}\n{"prompt_id": 2}\n')
    result = run("replay", "--target", pair_dirs[0], "--draft", pair_dirs[1], "--prompts", bad)
    assert result.exit_code == 3
    assert f"{bad}:2:" in result.stderr and "Traceback" not in result.stderr


def test_missing_model_folder_and_usage_errors(run, prompts, tmp_path):
    result = run("replay", "--target", tmp_path / "nope", "--draft", tmp_path / "nope", "--prompts", prompts)
    assert result.exit_code == 5 and "not a model folder" in result.stderr
    assert run("replay", "--target", "x", "--draft", "y").exit_code == 2  # nothing to replay
    assert run("replay", "--prompts", prompts, "--save").exit_code == 2  # --save needs --db


def test_strict_with_temperature_is_refused(run, pair_dirs, prompts):
    result = run("replay", "--target", pair_dirs[0], "--draft", pair_dirs[1], "--prompts", prompts,
                 "--acceptance", "strict", "--temperature", "0.8", "--device", "cpu")  # fmt: skip
    assert result.exit_code == 2 and "strict acceptance is greedy" in result.stderr


def test_sampled_replay_reports_divergence_verdicts(run, pair_dirs, prompts):
    result = run("replay", "--target", pair_dirs[0], "--draft", pair_dirs[1], "--prompts", prompts, "--json",
                 "--temperature", "1.0", "--acceptance", "rejection", "--max-new-tokens", 8, "--device", "cpu")  # fmt: skip
    out = json.loads(result.stdout)["results"]
    for r in out:
        assert r["tv_max"] < 1e-9
        if not r["matches_target_only"]:
            assert r["first_divergence"]["verdict"] == "sampled"


def test_importing_the_command_and_package_does_not_import_torch():
    code = (
        "import sys, replay, specdiag.commands.replay, replay.api, replay.prompts, replay.demo_pair; "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


def test_finding_replays_the_prompts_flag_picks(run, pair_dirs, tmp_path):
    """`replay --db --finding N` replays exactly the requests `specdiag flag --finding N` picks."""
    from datetime import datetime

    from specdiag.diagnose import flag, save_findings
    from specdiag.findings import Finding
    from specdiag.store import connect

    db = tmp_path / "f.duckdb"
    con = connect(db)
    for i, (task, accepted) in enumerate([("code", 1), ("code", 3), ("code", 2), ("chat", 0)]):
        con.execute(
            "insert into requests (request_id, source, ts, deployment, target_model, draft_model, tau, temperature,"
            " top_p, task, prompt, verify_steps, drafted, accepted, output_tokens) values"
            " (?, 'trace', ?, 'dep', 't@v1', 'd@v1', 4, 0.0, 1.0, ?, ?, 10, 40, ?, 20)",
            [f"r{i}", datetime(2026, 1, 1, 12, i), task, f"def f{i}(x):\n    return", accepted * 10],
        )
    save_findings(
        con,
        [Finding("acceptance_regression", "dep", {"task": "code"}, "high", "acceptance fell on code.")],
    )
    expected = [r["prompt_id"] for r in flag(con, finding_id=1, n=8)]
    con.close()
    assert sorted(expected) == ["r0", "r1", "r2"]  # the segment's requests only

    target, draft = pair_dirs
    result = run("replay", "--target", target, "--draft", draft, "--db", db, "--finding", 1, "--json",
                 "--max-new-tokens", 4, "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert [r["prompt_id"] for r in json.loads(result.stdout)["results"]] == expected

    missing = run("replay", "--target", target, "--draft", draft, "--db", db, "--finding", 7)
    assert missing.exit_code != 0 and "finding 7" in missing.stderr


def test_batch_size_gives_the_same_results_in_the_same_shape(run, pair_dirs, tmp_path, db):
    """--batch-size 3 runs the rows together; each row's output and counts are its batch-1 ones, keys identical,
    and --save stores them as it stores batch-1 runs."""
    path = tmp_path / "three.jsonl"
    records = [
        {"prompt_id": "code", "prompt": "def add(a, b):\n    return"},
        {"prompt_id": "one", "prompt_ids": [100]},
        {"prompt_id": "prose", "prompt": "The quick brown fox jumps over the"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    args = ("replay", "--target", pair_dirs[0], "--draft", pair_dirs[1], "--prompts", path, "--json",
            "--max-new-tokens", 10, "--device", "cpu", "--tau", 3)  # fmt: skip
    one, three = run(*args), run(*args, "--batch-size", 3, "--db", db, "--save")
    assert one.exit_code == 0 and three.exit_code == 0, three.stderr
    batched = json.loads(three.stdout)["results"]
    for a, b in zip(json.loads(one.stdout)["results"], batched, strict=True):
        assert set(a) == set(b) == KEYS
        for key in ("prompt_id", "output_token_ids", "output_text", "steps", "drafted", "accepted"):
            assert a[key] == b[key], key
        assert b["matches_target_only"] is True and b["draft_ms"] > 0 and b["target_only_ms"] > 0
    con = duckdb.connect(str(db), read_only=True)
    stored = con.execute(
        "select r.prompt_id, r.steps, count(*), sum(s.drafted), sum(s.accepted) from replay_runs r"
        " join replay_steps s using (run_id, prompt_id) group by all order by r.prompt_id"
    ).fetchall()
    assert stored == sorted(
        (b["prompt_id"], b["steps"], b["steps"], b["drafted"], b["accepted"]) for b in batched
    )
    assert con.execute("select distinct batch_size from replay_runs").fetchall() == [(3,)]
    con.close()
    assert run(*args, "--batch-size", 0).exit_code == 2


@pytest.fixture(scope="module")
def short_pair(tmp_path_factory):
    """A pair whose models take 32 positions and whose draft knows only the first 100 token ids."""
    root = tmp_path_factory.mktemp("short")
    tokenizer = build_tokenizer()
    for name, vocab in (("target", VOCAB_SIZE), ("draft", 100)):
        config = LlamaConfig(
            vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=2, max_position_embeddings=32, bos_token_id=None, eos_token_id=None,
        )  # fmt: skip
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root / "target", root / "draft"


def test_prompts_the_models_cannot_take_are_one_line_errors(run, short_pair, tmp_path):
    """Past the models' positions, or a token id only the larger vocabulary has: an error before anything runs
    (both were tracebacks from inside the models)."""
    target, draft = short_pair
    cases = [
        (
            {"prompt_id": "long", "prompt": "a" * 20},
            "20 prompt tokens + 16 new tokens exceed the 32 positions",
        ),
        ({"prompt_id": "tilde", "prompt": "hi~"}, "outside the vocabulary both models share (100 ids)"),
    ]
    for record, reason in cases:
        path = tmp_path / f"{record['prompt_id']}.jsonl"
        path.write_text(json.dumps({"prompt_id": "ok", "prompt": "12"}) + "\n" + json.dumps(record) + "\n")
        result = run("replay", "--target", target, "--draft", draft, "--prompts", path, "--max-new-tokens", 16,
                     "--device", "cpu")  # fmt: skip
        assert result.exit_code == 3 and reason in result.stderr, result.stderr
        assert result.stderr.count("\n") == 2  # the vocabulary warning, then the error
    result = run("replay", "--target", target, "--draft", draft, "--profile-costs", "--db", tmp_path / "p.duckdb",
                 "--device", "cpu")  # fmt: skip
    assert result.exit_code == 2 and "the models take 32" in result.stderr


def test_bad_settings_and_weights_are_one_line_errors(run, pair_dirs, prompts, tmp_path):
    target, draft = pair_dirs
    base = ("replay", "--target", target, "--draft", draft, "--prompts", prompts, "--device", "cpu")
    for extra in (("--seed", str(2**64)), ("--temperature", "nan"), ("--temperature", "inf")):
        result = run(*base, *extra)
        assert result.exit_code == 2 and "Traceback" not in result.stderr, extra
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"prompt_id": 5, "prompt": "a"}\n{"prompt_id": "5", "prompt": "b"}\n')
    result = run("replay", "--target", target, "--draft", draft, "--prompts", dup)
    assert result.exit_code == 3 and f"{dup}:2: prompt_id '5' repeats line 1" in result.stderr
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(target, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    result = run("replay", "--target", broken, "--draft", draft, "--prompts", prompts, "--device", "cpu")
    assert result.exit_code == 5 and "cannot load model" in result.stderr and result.stderr.count("\n") == 1


def test_a_tiny_temperature_samples_like_greedy(run, pair_dirs, prompts):
    """logits / 1e-40 overflow: the largest logit is subtracted first, so the draw is the argmax, not nan."""
    target, draft = pair_dirs
    runs = [
        run(
            "replay",
            "--target",
            target,
            "--draft",
            draft,
            "--prompts",
            prompts,
            "--device",
            "cpu",
            "--json",
            "--max-new-tokens",
            8,
            *extra,
        )  # fmt: skip
        for extra in (("--temperature", "1e-40", "--acceptance", "rejection"), ())
    ]
    assert all(r.exit_code == 0 for r in runs), runs[0].stderr
    tokens = [[x["output_token_ids"] for x in json.loads(r.stdout)["results"]] for r in runs]
    assert tokens[0] == tokens[1]
