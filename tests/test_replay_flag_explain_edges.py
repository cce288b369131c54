"""The on-call path after diagnose (flag -> replay -> explain) on inputs the happy path does not exercise: prompt
records with null or odd fields, degenerate top-p, shadow-match-only fast_but_wrong findings, and the rejected tokens
explain reads from a replay."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import torch

from replay.api import settings_for
from replay.prompts import read_prompts
from replay.sampling import Sampling, distribution
from specdiag.diagnose.flag import pick
from specdiag.errors import InputError
from specdiag.explain import explain_request
from specdiag.findings import Finding
from tests.test_explain import T0, add_replay, build


def test_a_null_tau_in_a_record_means_the_default(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt_id": "a", "prompt": "hi", "tau": None}) + "\n")
    (record,) = read_prompts(path)  # null is accepted as absent ...
    assert (
        settings_for(record, None, None, None, None)["tau"] == 4
    )  # ... so it must mean the default, not crash


def test_a_prompt_with_a_lone_surrogate_is_a_one_line_input_error(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt_id": "a", "prompt": "x\\ud800y"}\n')  # valid JSON, not encodable text
    with pytest.raises(InputError, match="p.jsonl:1: prompt is not valid Unicode"):
        read_prompts(path)


@pytest.mark.parametrize("top_p", [1e-300, 1e-50])
def test_a_tiny_top_p_keeps_the_most_probable_token(top_p: float) -> None:
    probs = distribution(torch.tensor([0.0, 2.0, 1.0]), Sampling(1.0, top_p))
    assert torch.equal(probs, torch.tensor([0.0, 1.0, 0.0]))  # not NaN (multinomial then raises)


def test_replay_refuses_a_nan_top_p(run) -> None:
    result = run("replay", "--prompts", "unused.jsonl", "--top-p", "nan")
    assert result.exit_code == 2 and "not a finite number" in result.stderr


def test_flag_picks_fast_but_wrong_requests_by_shadow_match_when_quality_is_not_logged() -> None:
    finding = Finding("fast_but_wrong", "dep", {}, "high", "s", finding_id=1)
    rows = pl.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(6)],
            "prompt": ["p"] * 6,
            "deployment": ["dep"] * 6,
            "tau": [4] * 6,
            "temperature": [0.0] * 6,
            "top_p": [1.0] * 6,
            "target_model": ["t"] * 6,
            "draft_model": ["d"] * 6,
            "quality": pl.Series([None] * 6, dtype=pl.Float64),
            "shadow_match": [True, False, True, True, False, True],
        }
    )
    records = pick(finding, rows, 4)
    assert len(records) == 4
    assert {r["request_id"] for r in records if r["why"].startswith("worst")} == {"r1", "r4"}


def test_explain_lists_only_the_rejected_draft_of_each_replayed_step(db: Path) -> None:
    con = build(db, alpha=0.6, tau=3)
    # step 0: 3 drafts, the first kept, the second rejected, the third discarded unverified
    add_replay(
        con,
        "run1",
        T0,
        [(0, 0, 7, "a", 0.5, 0.6, True), (0, 1, 8, "b", 0.7, 0.1, False), (0, 2, 9, "c", 0.9, 0.9, False)],
    )
    e = explain_request(con, "x")
    assert [(r["step"], r["position"], r["token_id"]) for r in e["rejected_tokens"]] == [(0, 1, 8)]


def test_a_typical_production_rule_is_replayed_with_it(tmp_path: Path) -> None:
    """A fast_but_wrong finding's lossy `typical` rule reaches replay through flag's record: replaying it strictly
    would report a match and hide the incident. Other rule names keep the lossless default."""
    path = tmp_path / "p.jsonl"
    lines = [
        {"prompt_id": "a", "prompt": "hi", "temperature": 0.7, "acceptance": "typical"},
        {"prompt_id": "b", "prompt": "hi", "temperature": 0.7, "acceptance": "rejection_sampling"},
        {"prompt_id": "c", "prompt": "hi", "acceptance": "Typical"},
        # vLLM's names for its two rules (spec_decoding_acceptance_method)
        {"prompt_id": "d", "prompt": "hi", "temperature": 0.7, "acceptance": "typical_acceptance_sampler"},
        {"prompt_id": "e", "prompt": "hi", "temperature": 0.7, "acceptance": "rejection_sampler"},
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    rules = [settings_for(r, None, None, None, None)["acceptance"] for r in read_prompts(path)]
    assert rules == ["typical", "rejection", "typical", "typical", "rejection"]
    # an explicit option still wins
    assert settings_for(read_prompts(path)[0], None, None, None, "rejection")["acceptance"] == "rejection"
    path.write_text(json.dumps({"prompt_id": "a", "prompt": "hi", "acceptance": 3}) + "\n")
    with pytest.raises(InputError, match="acceptance must be a string"):
        read_prompts(path)


@pytest.mark.parametrize(("option", "value"), [("--typical-epsilon", "nan"), ("--typical-delta", "-0.1")])
def test_replay_refuses_typical_settings_out_of_range(run, option: str, value: str) -> None:
    result = run("replay", "--prompts", "unused.jsonl", option, value)
    assert result.exit_code == 2 and "Traceback" not in result.stderr


def test_explain_lists_replays_oldest_first(db: Path) -> None:
    """Run ids are random: replays of a request are listed in the order they ran, not by id."""
    from datetime import timedelta

    con = build(db, alpha=0.6, tau=3)
    for run_id, minutes in (("zzz-first", 0), ("aaa-second", 5)):
        add_replay(con, run_id, T0 + timedelta(minutes=minutes), [(0, 0, 7, "a", 0.5, 0.1, False)])
    sources = [r["source"] for r in explain_request(con, "x")["rejected_tokens"]]
    assert sources == ["replay:zzz-first", "replay:aaa-second"]


@pytest.mark.parametrize("tau", [-1, 65, 10**11])
def test_a_record_tau_out_of_range_is_refused_before_replaying(tmp_path: Path, tau: int) -> None:
    """tau 1e11 passed, replayed in full, then failed at --save (the store's tau is an INT32)."""
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt_id": "a", "prompt": "hi", "tau": tau}) + "\n")
    with pytest.raises(InputError, match=r"tau must be an integer in \[0, 64\]"):
        read_prompts(path)
