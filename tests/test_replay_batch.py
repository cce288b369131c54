"""Batched replay: every row of a batch produces exactly what the batch-1 loop produces for that prompt.

Tiny random Llama models (as in test_replay_engine); the draft is a weight-perturbed copy of the target, so rows
accept different prefix lengths at every step. Prompts of different lengths (1 token included) exercise the padding
holes; rejected drafts exercise the rollback holes.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import LlamaForCausalLM

from replay import batch
from replay.batch import speculative_generate_batch, target_generate_batch
from replay.cache import RaggedCache, forward, new_cache
from replay.engine import speculative_generate, target_generate
from replay.models import Pair
from replay.rules import Rule
from replay.sampling import Sampling
from tests.replay_models import DEVICE, VOCAB, generator, perturbed, tiny

NEW = 16
PROMPTS = [[3, 4, 5, 6, 7], [11], [40, 3, 17, 17, 17, 9, 30, 31]]


@functools.cache
def sdpa_pair() -> tuple[LlamaForCausalLM, LlamaForCausalLM]:
    """Target and perturbed draft, built once (also outside fixtures: the property test uses it)."""
    target = tiny(0)
    return target, perturbed(target)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pair() -> tuple[LlamaForCausalLM, LlamaForCausalLM]:
    return sdpa_pair()


def gens(count: int, seed: int = 0) -> list[torch.Generator]:
    return [generator(seed + i) for i in range(count)]


def alone(pair, prompt, seed, **kw):
    kw = {"tau": 4, "max_new_tokens": NEW, "sampling": Sampling(), "rule": Rule(), **kw}
    with torch.inference_mode():
        return speculative_generate(*pair, prompt, generator=generator(seed), vocab_size=VOCAB,
                                    **kw)  # fmt: skip


def together(pair, prompts, seed=0, **kw):
    kw = {"tau": 4, "max_new_tokens": NEW, "sampling": Sampling(), "rule": Rule(), **kw}
    with torch.inference_mode():
        return speculative_generate_batch(*pair, prompts, generators=gens(len(prompts), seed), vocab_size=VOCAB,
                                          **kw)  # fmt: skip


def assert_same_run(single, row) -> None:
    """Output, per-step counts and per-token records equal (probabilities up to float rounding)."""
    assert row.token_ids == single.token_ids
    assert [(s.step, s.drafted, s.accepted) for s in row.steps] == [
        (s.step, s.drafted, s.accepted) for s in single.steps
    ]
    for a, b in zip(single.steps, row.steps):
        assert [(t["token_id"], t["accepted"]) for t in a.tokens] == [
            (t["token_id"], t["accepted"]) for t in b.tokens
        ]
        for x, y in zip(a.tokens, b.tokens):
            assert y["p"] == pytest.approx(x["p"], abs=1e-5) and y["q"] == pytest.approx(x["q"], abs=1e-5)
            assert y["entropy"] == pytest.approx(x["entropy"], abs=1e-4)
        # TV sums |emitted - p| over the vocabulary in float32: batched GPU kernels move it by ~1e-6 (seen on an H200)
        assert b.tv == pytest.approx(a.tv, abs=1e-5)


@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_greedy_rows_equal_their_batch_1_runs(attn, size):
    target = tiny(0, attn)  # the mask reaches SDPA and eager attention by different code paths
    pair = target, perturbed(target)
    prompts = PROMPTS[:size] if size == 3 else [PROMPTS[2], PROMPTS[1]]
    rows = together(pair, prompts)
    for i, prompt in enumerate(prompts):
        assert_same_run(alone(pair, prompt, i), rows[i])
    # the rows really did accept different lengths at the same step
    assert len({tuple(s.accepted for s in r.steps) for r in rows}) == len(rows)


def test_rows_with_different_tau_limits_and_lengths(pair):
    """Rows end their drafting at different steps (max_new_tokens cuts tau differently)."""
    prompts = [PROMPTS[0], PROMPTS[2], [5, 5]]
    for tau in (0, 1, 3, 7):
        rows = together(pair, prompts, tau=tau, max_new_tokens=11)
        for i, prompt in enumerate(prompts):
            assert_same_run(alone(pair, prompt, i, tau=tau, max_new_tokens=11), rows[i])


def test_a_row_that_hits_eos_leaves_and_the_others_are_unchanged(pair, monkeypatch):
    plain = [alone(pair, p, i).token_ids for i, p in enumerate(PROMPTS)]
    # an EOS id that row 0 emits mid-way and the other rows never emit
    eos = next(t for t in plain[0][2:-2] if all(t not in other for other in plain[1:]))
    batch_rows = []  # rows in each forward pass of the batched loop
    real_forward = RaggedCache.forward

    def counting_forward(self, model, chunks, vocab_size, pad_id=0):
        batch_rows.append(len(chunks))
        return real_forward(self, model, chunks, vocab_size, pad_id)

    monkeypatch.setattr(RaggedCache, "forward", counting_forward)
    rows = together(pair, PROMPTS, eos_token_id=eos)
    # finished rows stop taking part in passes: the batch only shrinks
    assert batch_rows[0] == 3 and batch_rows == sorted(batch_rows, reverse=True) and batch_rows[-1] < 3
    for i, prompt in enumerate(PROMPTS):
        assert_same_run(alone(pair, prompt, i, eos_token_id=eos), rows[i])
    assert rows[0].token_ids[-1] == eos and len(rows[0].token_ids) < NEW
    assert [len(r.token_ids) for r in rows[1:]] == [NEW, NEW]


@pytest.mark.parametrize("rule", ["rejection", "typical"])
def test_seeded_sampling_rows_reproduce_their_batch_1_runs(pair, rule):
    """One generator per row, drawn in the batch-1 order: the same tokens and accept decisions. (Exact here; in
    general only up to float rounding: a uniform draw within ~1e-7 of an acceptance threshold could flip.)"""
    kw = {"sampling": Sampling(1.0, 0.9), "rule": Rule(rule, 0.3, 0.5)}
    for seed in (0, 10):
        rows = together(pair, PROMPTS, seed, **kw)
        for i, prompt in enumerate(PROMPTS):
            assert_same_run(alone(pair, prompt, seed + i, **kw), rows[i])


@pytest.mark.parametrize("sampling", [Sampling(), Sampling(0.8)])
def test_target_alone_batched_equals_batch_1(pair, sampling):
    with torch.inference_mode():
        rows = target_generate_batch(pair[0], PROMPTS, max_new_tokens=NEW, sampling=sampling, generators=gens(3),
                                     vocab_size=VOCAB)  # fmt: skip
        for i, prompt in enumerate(PROMPTS):
            single = target_generate(pair[0], prompt, max_new_tokens=NEW, sampling=sampling,
                                     generator=generator(i), vocab_size=VOCAB)  # fmt: skip
            assert rows[i].token_ids == single.token_ids
            assert rows[i].logit_margins == pytest.approx(single.logit_margins, abs=1e-4)


@settings(max_examples=12, deadline=None)
@given(
    prompts=st.lists(st.lists(st.integers(1, VOCAB - 1), min_size=1, max_size=9), min_size=1, max_size=4),
    tau=st.integers(0, 5),
    max_new=st.integers(1, 10),
    sampled=st.booleans(),
)
def test_any_batch_of_prompts_reproduces_batch_1(prompts, tau, max_new, sampled):
    """Random prompt lengths, tau and lengths: random accept patterns, every row equal to its batch-1 run."""
    models = sdpa_pair()
    kw = {"tau": tau, "max_new_tokens": max_new}
    if sampled:
        kw.update(sampling=Sampling(1.0), rule=Rule("rejection"))
    rows = together(models, prompts, 3, **kw)
    for i, prompt in enumerate(prompts):
        assert_same_run(alone(models, prompt, 3 + i, **kw), rows[i])


def test_ragged_cache_rows_see_only_their_own_tokens():
    """The invariant everything rests on: after padding, rollback holes and row removal, a row's logits are those
    of its own token sequence fed alone."""
    model = tiny(0)

    def solo(tokens: list[int]) -> torch.Tensor:
        return forward(model, tokens, new_cache(), VOCAB)[0, -1]

    with torch.inference_mode():
        cache = RaggedCache(3, model.device)
        cache.forward(model, [[1, 2, 3], [4], []], VOCAB)
        cache.keep(torch.tensor([1, 1, 0], device=DEVICE))  # row 0 rolls back to [1]
        out = cache.forward(model, [[5, 6], [7], [8]], VOCAB)
        torch.testing.assert_close(out[0, 1], solo([1, 5, 6]))
        torch.testing.assert_close(out[1, 0], solo([4, 7]))
        torch.testing.assert_close(out[2, 0], solo([8]))
        assert cache.lengths() == [3, 2, 1]
        cache.select([0, 2])  # row 1 finished
        cache.keep(torch.tensor([2, 1], device=DEVICE))
        cache.compact()
        out = cache.forward(model, [[9], [10]], VOCAB)
        torch.testing.assert_close(out[0, 0], solo([1, 5, 9]))
        torch.testing.assert_close(out[1, 0], solo([8, 10]))
        assert not torch.isnan(out).any()


def test_batched_stage_time_is_shared_equally_by_its_rows(pair, monkeypatch):
    clocks = []

    class Recording(batch.StageClock):
        def __init__(self, device):
            super().__init__(device)
            clocks.append(self)

    monkeypatch.setattr(batch, "StageClock", Recording)
    rows = together(pair, PROMPTS)
    clock = clocks[0]
    for stage in ("draft", "verify"):
        total = sum(getattr(r, f"{stage}_ms") for r in rows)
        assert total == pytest.approx(clock.total(stage), rel=1e-9)
    # step 0 is one batched pass of all three rows: each is charged a third of it
    assert rows[0].steps[0].verify_ms == pytest.approx(clock.resolve()[("verify", 0)] / 3)
    assert rows[0].steps[0].verify_ms == rows[1].steps[0].verify_ms == rows[2].steps[0].verify_ms > 0


def test_replay_prompts_batch_size_gives_the_batch_1_results():
    from replay.api import PUBLIC_KEYS, replay_prompts

    target, draft = sdpa_pair()
    models = Pair(target, draft, None, "t", "d", DEVICE.type, "float32", VOCAB, None, None)
    records = [
        {"prompt_id": "a", "prompt_ids": PROMPTS[0]},
        {"prompt_id": "b", "prompt_ids": PROMPTS[1], "tau": 2},  # other settings: a batch of its own
        {"prompt_id": "c", "prompt_ids": PROMPTS[2]},
        {"prompt_id": "d", "prompt_ids": [7, 8], "temperature": 0.9},
    ]
    kw = {"max_new_tokens": 10, "pair": models, "threads": None}
    one = replay_prompts(records, **kw)
    three = replay_prompts(records, batch_size=3, **kw)
    timing = {"draft_ms", "verify_ms", "target_only_ms", "speedup"}
    assert [r["prompt_id"] for r in three] == ["a", "b", "c", "d"]
    for x, y in zip(one, three):
        assert set(x) == set(y) and set(PUBLIC_KEYS) <= set(y)
        for key in set(PUBLIC_KEYS) - timing - {"tv_max", "tv_mean"}:
            assert x[key] == y[key], key
        assert y["tv_max"] == pytest.approx(x["tv_max"], abs=1e-5)
        assert y["draft_ms"] > 0 and y["verify_ms"] > 0 and math.isfinite(y["speedup"])
        assert [(s["drafted"], s["accepted"]) for s in x["step_records"]] == [
            (s["drafted"], s["accepted"]) for s in y["step_records"]
        ]


def test_sliding_window_models_are_refused_when_batching():
    """A sliding window counts cache slots, holes included: a batched row would see fewer tokens than alone."""
    from transformers import MistralConfig, MistralForCausalLM

    from replay.api import replay_prompts
    from specdiag.errors import UsageError

    config = MistralConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=2, sliding_window=8, pad_token_id=0)  # fmt: skip
    model = MistralForCausalLM(config).eval()
    models = Pair(model, model, None, "t", "d", "cpu", "float32", VOCAB, None, None)
    records = [{"prompt_id": "a", "prompt_ids": [1, 2]}, {"prompt_id": "b", "prompt_ids": [3]}]
    with pytest.raises(UsageError, match="sliding-window"):
        replay_prompts(records, max_new_tokens=2, pair=models, threads=None, batch_size=2)
    assert len(replay_prompts(records, max_new_tokens=2, pair=models, threads=None)) == 2  # batch 1 is fine


def test_ragged_cache_packs_rows_when_holes_fill_it():
    """Rejected drafts leave holes mid-cache; once they fill over half of it the rows are packed to the front,
    and what each row attends to does not change."""
    model = tiny(0)
    with torch.inference_mode():
        cache = RaggedCache(2, model.device)
        cache.forward(model, [[1, 2, 3, 4, 5, 6], [7, 8]], VOCAB)
        cache.forward(model, [[9], [10, 11, 12, 13]], VOCAB)
        cache.keep(torch.tensor([2, 6], device=DEVICE))  # row 0 keeps [1, 2]; row 1 all six
        cache.compact()  # 8 of 20 slots used: packed, then cropped to the longest row
        assert cache.valid.shape[1] == cache.kv.get_seq_length() == 6
        assert cache.lengths() == [2, 6]
        out = cache.forward(model, [[14], [15]], VOCAB)
        torch.testing.assert_close(out[0, 0], forward(model, [1, 2, 14], new_cache(), VOCAB)[0, -1])
        torch.testing.assert_close(
            out[1, 0], forward(model, [7, 8, 10, 11, 12, 13, 15], new_cache(), VOCAB)[0, -1]
        )


def test_rows_of_a_learned_position_model_run_up_to_its_last_position():
    """GPT-2 style models index a table of n_positions embeddings with position_ids. A row near its last position
    padded to a longer row's chunk used to give its holes positions past the table (IndexError), although the
    prompt and output fit and batch 1 runs."""
    from transformers import GPT2Config, GPT2LMHeadModel

    def gpt2(seed: int, layers: int) -> GPT2LMHeadModel:
        torch.manual_seed(seed)
        config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=layers, n_head=2, n_positions=32,
                            initializer_range=0.4, bos_token_id=None, eos_token_id=None)  # fmt: skip
        return GPT2LMHeadModel(config).eval().to(DEVICE)  # type: ignore[arg-type]

    pair = gpt2(0, 2), gpt2(1, 1)
    prompts = [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]]
    new = 32 - len(prompts[0])  # prompt + output fill every position
    rows = together(pair, prompts, max_new_tokens=new)
    for i, prompt in enumerate(prompts):
        assert_same_run(alone(pair, prompt, i, max_new_tokens=new), rows[i])
