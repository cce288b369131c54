"""The speculative loop on tiny random models: greedy output is exactly the target's, whatever the draft.

Three drafts: the target itself (agrees fully), an unrelated random model (agrees almost never) and a
weight-perturbed copy of the target (agrees partially). Reference outputs come from transformers'
`generate(do_sample=False)` and its own assisted generation (`assistant_model=`).
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

from replay import engine
from replay.engine import speculative_generate, target_generate
from replay.rules import Rule
from replay.sampling import Sampling
from tests.replay_models import DEVICE, VOCAB, generator, perturbed, tiny

NEW = 16
PROMPTS = [[3, 4, 5, 6, 7], [11], [40, 2 + 1, 17, 17, 17, 9, 30, 31]]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny models: one thread is fastest and keeps the shared CI box free
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models() -> dict[str, LlamaForCausalLM]:
    target = tiny(0)
    return {"target": target, "self": target, "other": tiny(1), "perturbed": perturbed(target)}


def spec(models, draft: str, prompt: list[int], tau: int = 4, **kw):
    kw.setdefault("sampling", Sampling())
    kw.setdefault("rule", Rule("strict"))
    kw.setdefault("generator", generator(0))
    with torch.inference_mode():
        return speculative_generate(
            models["target"], models[draft], prompt, tau=tau, max_new_tokens=NEW, vocab_size=VOCAB, **kw
        )


def hf(models, prompt: list[int], assistant: str | None = None) -> list[int]:
    extra = {"assistant_model": models[assistant]} if assistant else {}
    with torch.inference_mode():
        out = models["target"].generate(
            torch.tensor([prompt], device=DEVICE),
            do_sample=False,
            max_new_tokens=NEW,
            min_new_tokens=NEW,
            **extra,
        )
    return out[0, len(prompt) :].tolist()


@pytest.mark.parametrize("draft", ["self", "other", "perturbed"])
def test_greedy_output_equals_generate_and_assisted_generation(models, draft):
    for prompt in PROMPTS:
        ours = spec(models, draft, prompt).token_ids
        assert ours == hf(models, prompt)
        assert ours == hf(models, prompt, assistant=draft)


def acceptance_rate(models, draft: str) -> float:
    runs = [spec(models, draft, prompt) for prompt in PROMPTS]
    drafted = sum(s.drafted for g in runs for s in g.steps)
    return sum(s.accepted for g in runs for s in g.steps) / drafted


def test_the_three_drafts_cover_full_partial_and_no_agreement(models):
    assert acceptance_rate(models, "self") == 1.0
    assert 0.2 < acceptance_rate(models, "perturbed") < 0.95
    assert acceptance_rate(models, "other") < 0.2


@pytest.mark.parametrize("tau", [0, 1, 3, 8])
def test_any_tau_gives_the_target_output_and_consistent_counts(models, tau):
    g = spec(models, "perturbed", PROMPTS[0], tau=tau)
    assert g.token_ids == hf(models, PROMPTS[0])
    # every step emits its accepted drafts plus one target token
    assert sum(s.accepted + 1 for s in g.steps) == len(g.token_ids) == NEW
    assert all(s.drafted <= tau and 0 <= s.accepted <= s.drafted for s in g.steps)
    assert all(len(s.tokens) == s.drafted for s in g.steps)


@pytest.mark.parametrize("draft", ["self", "perturbed"])
def test_drafts_accepted_after_eos_are_not_counted(models, draft):
    """With each token of the output as EOS in turn: the output stops at it, and the step that emitted it counts
    no draft after it (they were never emitted: accepted past EOS, they inflated acceptance and MAL)."""
    full = spec(models, draft, PROMPTS[0]).token_ids
    for eos in dict.fromkeys(full):
        g = spec(models, draft, PROMPTS[0], eos_token_id=eos)
        assert g.token_ids == full[: full.index(eos) + 1]
        assert all(len(s.tokens) == s.drafted and 0 <= s.accepted <= s.drafted for s in g.steps)
        last = g.steps[-1]
        kept = [t["token_id"] for t in last.tokens if t["accepted"]]
        ended_on_a_draft = bool(kept) and kept[-1] == eos and last.accepted == last.drafted
        assert eos not in kept[:-1]
        assert all(eos not in [t["token_id"] for t in s.tokens if t["accepted"]] for s in g.steps[:-1])
        # every step emits its accepted drafts and one target token, except one that ended on an accepted EOS
        assert sum(s.accepted + 1 for s in g.steps) - ended_on_a_draft == len(g.token_ids)


def test_negative_control_cache_not_rolled_back_breaks_equality(models, monkeypatch):
    created = []
    real_new_cache, real_rollback = engine.new_cache, engine.rollback

    def recording_new_cache():
        created.append(real_new_cache())
        return created[-1]

    def rollback_all_but_target(cache, length):  # the target's cache is created first
        if cache is not created[0]:
            real_rollback(cache, length)

    monkeypatch.setattr(engine, "new_cache", recording_new_cache)
    monkeypatch.setattr(engine, "rollback", rollback_all_but_target)
    assert spec(models, "perturbed", PROMPTS[0]).token_ids != hf(models, PROMPTS[0])


def test_target_alone_matches_generate(models):
    with torch.inference_mode():
        alone = target_generate(
            models["target"],
            PROMPTS[2],
            max_new_tokens=NEW,
            sampling=Sampling(),
            generator=None,
            vocab_size=VOCAB,
        )
    assert alone.token_ids == hf(models, PROMPTS[2])
    assert all(m >= 0 for m in alone.logit_margins) and alone.ms > 0


def test_per_token_records_carry_probabilities_and_confidence(models):
    g = spec(models, "perturbed", PROMPTS[0])
    tokens = [t for s in g.steps for t in s.tokens]
    assert tokens and all(0 <= t["q"] <= 1 and 0 <= t["p"] <= 1 for t in tokens)
    assert all(t["entropy"] >= 0 and 0 <= t["margin"] <= 1 for t in tokens)
    # greedy: a drafted token is accepted exactly when it is the target's argmax there
    for s in g.steps:
        assert [t["accepted"] for t in s.tokens] == [i < s.accepted for i in range(s.drafted)]
    assert g.draft_ms > 0 and g.verify_ms > 0


def sampled(models, rule: Rule, seed: int):
    return spec(models, "perturbed", PROMPTS[0], sampling=Sampling(1.0, 0.9), rule=rule,
                generator=generator(seed))  # fmt: skip


def test_seeded_sampling_is_reproducible(models):
    a, b = sampled(models, Rule("rejection"), 3), sampled(models, Rule("rejection"), 3)
    assert a.token_ids == b.token_ids
    assert [s.accepted for s in a.steps] == [s.accepted for s in b.steps]
    assert sampled(models, Rule("rejection"), 4).token_ids != a.token_ids


def test_exact_tv_is_zero_for_rejection_and_positive_for_typical(models):
    tv_rejection = [tv for s in sampled(models, Rule("rejection"), 0).steps for tv in s.tv]
    tv_typical = [tv for s in sampled(models, Rule("typical", 0.3, 0.5), 0).steps for tv in s.tv]
    assert tv_rejection and max(tv_rejection) < 1e-9
    assert max(tv_typical) > 1e-3


def test_greedy_typical_judges_by_the_target_softmax_and_stays_lossy(models):
    """At temperature 0 p is one-hot, under which `typical` is the strict rule: replaying the greedy requests of a
    fast_but_wrong finding (flag's records carry acceptance=typical) reported a lossless match, hiding the incident.
    As vLLM does for greedy requests, the rule judges drafts by the target's softmax at temperature 1."""
    runs = [spec(models, "other", prompt, rule=Rule("typical")) for prompt in PROMPTS]
    assert max(tv for g in runs for s in g.steps for tv in s.tv) == pytest.approx(1.0)
    assert any(g.token_ids != hf(models, prompt) for g, prompt in zip(runs, PROMPTS))
    # the strict rule on the same drafts stays exact
    assert all(spec(models, "other", prompt).token_ids == hf(models, prompt) for prompt in PROMPTS)
