"""Acceptance rules on given p/q vectors: exact emitted distributions and chi-square tests of the sampler.

The sampler is run vectorised: 30,000 independent verify steps of tau = 2 drafts at once, with fixed per-position
p (target) and q (draft) rows. Whatever the rule keeps, the token at output position j (given the step reached it)
must be distributed as p_j, the bonus position included. Negative controls (known bugs) must fail the same test.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from replay import rules
from replay.rules import Rule, emitted_distribution, total_variation, verify
from replay.sampling import Sampling, distribution
from tests.replay_models import DEVICE

N_DRAWS = 30_000
TAU = 2
# per-position target p (tau + 1 rows: drafted positions and the bonus) and draft q (tau rows) over a vocab of 5
P = torch.tensor(
    [[0.40, 0.25, 0.15, 0.12, 0.08], [0.10, 0.20, 0.30, 0.25, 0.15], [0.22, 0.18, 0.20, 0.15, 0.25]],
    dtype=torch.float64,
)
Q = torch.tensor([[0.15, 0.35, 0.10, 0.30, 0.10], [0.30, 0.10, 0.25, 0.05, 0.30]], dtype=torch.float64)


def position_pvalues(verify_fn, seed: int = 0) -> np.ndarray:
    """Chi-square goodness-of-fit p-value of the emitted token at each output position 0..tau against p_j."""
    g = torch.Generator(DEVICE).manual_seed(seed)
    on = {"device": DEVICE}
    drafts = torch.multinomial(Q.to(**on), N_DRAWS, replacement=True, generator=g).T  # (N, tau) drawn from q
    q = Q.to(**on).expand(N_DRAWS, TAU, -1)
    p = P.to(**on).expand(N_DRAWS, TAU + 1, -1)
    accepted, next_token = (t.cpu() for t in verify_fn(drafts, q, p, g))
    drafts = drafts.cpu()
    pvalues = []
    for j in range(TAU + 1):
        reached = accepted >= j
        token = next_token if j == TAU else torch.where(accepted > j, drafts[:, j], next_token)
        counts = torch.bincount(token[reached], minlength=P.shape[1]).numpy()
        expected = P[j].numpy() * int(reached.sum())
        pvalues.append(stats.chisquare(counts, expected).pvalue)
    return np.array(pvalues)


def adjusted(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values across positions."""
    return stats.false_discovery_control(pvalues, method="bh")


def rejection(drafts, q, p, g):
    return verify(Rule("rejection"), drafts, q, p, g)


def test_rejection_sampling_emits_p_at_every_position_including_bonus():
    assert adjusted(position_pvalues(rejection)).min() > 0.01


def test_rejection_result_holds_for_other_seeds():
    for seed in (1, 2):
        assert adjusted(position_pvalues(rejection, seed)).min() > 0.01


def always_accept(drafts, q, p, g):
    n = drafts.shape[1]
    return torch.full((drafts.shape[0],), n, device=p.device), torch.multinomial(
        p[:, n], 1, generator=g
    ).squeeze(-1)


def swapped(drafts, q, p, g):
    n = drafts.shape[1]
    return verify(Rule("rejection"), drafts, p[:, :n], torch.cat([q, p[:, n:]], dim=1), g)


@pytest.mark.parametrize("bug", [always_accept, swapped], ids=["always-accept", "p-q-swapped"])
def test_negative_controls_fail_the_chi_square_test(bug):
    assert adjusted(position_pvalues(bug)).min() < 1e-6


def test_negative_control_no_residual_resampling_fails(monkeypatch):
    # on rejection, draw from p itself instead of norm(max(0, p - q)): over-weights tokens q already proposes
    monkeypatch.setattr(rules, "recovery", lambda rule, p, q: p)
    assert adjusted(position_pvalues(rejection)).min() < 1e-6


def test_typical_acceptance_is_lossy_and_detected():
    def typical(drafts, q, p, g):
        return verify(Rule("typical", typical_epsilon=0.2, typical_delta=0.5), drafts, q, p, g)

    assert adjusted(position_pvalues(typical)).min() < 1e-6


def test_verify_strict_keeps_the_prefix_equal_to_the_target_argmax():
    p = torch.nn.functional.one_hot(torch.tensor([[1, 2, 3, 4]]), 5).double()
    q = torch.nn.functional.one_hot(torch.tensor([[1, 2, 0]]), 5).double()
    accepted, nxt = verify(Rule("strict"), torch.tensor([[1, 2, 0]]), q, p)
    assert accepted.tolist() == [2] and nxt.tolist() == [3]  # correction: the target's argmax at position 2
    accepted, nxt = verify(Rule("strict"), torch.tensor([[1, 2, 3]]), p[:, :3], p)
    assert accepted.tolist() == [3] and nxt.tolist() == [4]  # all kept: bonus token


probability_vectors = st.lists(st.floats(0.0, 1.0), min_size=2, max_size=8).filter(lambda v: sum(v) > 1e-3)


def _normalise(v: list[float]) -> torch.Tensor:
    t = torch.tensor(v, dtype=torch.float64)
    return t / t.sum()


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_rejection_emits_exactly_p_for_any_p_and_q(data):
    n = data.draw(st.integers(2, 8))
    p = _normalise(
        data.draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n).filter(lambda v: sum(v) > 1e-3))
    )
    q = _normalise(
        data.draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n).filter(lambda v: sum(v) > 1e-3))
    )
    for name in ("rejection", "typical", "strict"):
        e = emitted_distribution(Rule(name), p, q)
        assert float(e.sum()) == pytest.approx(1.0, abs=1e-12)
        assert float(e.min()) >= -1e-15
    assert float(total_variation(emitted_distribution(Rule("rejection"), p, q), p)) < 1e-12


def test_typical_tv_is_positive_where_it_rejects_a_plausible_token():
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    q = torch.tensor([0.1, 0.1, 0.8], dtype=torch.float64)
    tv = total_variation(emitted_distribution(Rule("typical", 0.25, 0.3), p, q), p)
    assert float(tv) > 0.1  # token 2 (p = 0.2 < threshold 0.25) is never emitted


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(-20, 20), min_size=2, max_size=12),
    st.floats(0.05, 3.0),
    st.floats(0.05, 1.0),
)
def test_distribution_is_a_distribution_that_respects_top_p(logits, temperature, top_p):
    x = torch.tensor(logits)
    probs = distribution(x, Sampling(temperature, top_p))
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-5)
    kept = probs > 0
    full = torch.softmax(x.double() / temperature, -1)
    # a most probable token always survives top-p (at a tie in float32, either of the tied tokens)
    assert bool((full[kept] >= full.max() - 1e-6).any())
    # the kept set is the smallest prefix by probability whose mass reaches top_p: without its least likely
    # member the mass falls short of top_p
    assert float(full[kept].sum() - full[kept].min()) < top_p + 1e-6


def test_greedy_distribution_is_one_hot_argmax():
    x = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 2.9]])
    assert distribution(x, Sampling(0.0)).argmax(-1).tolist() == [1, 0]
    assert distribution(x, Sampling(0.0)).sum().item() == 2.0


# --- The whole loop with a context-dependent stub model: a cache that is not rolled back changes the context -----


class ParityLM(torch.nn.Module):
    """A language model with a known distribution that depends on its whole context: the next token after `prev` is
    drawn from table[s % 2, prev], s = the sum of the token ids it attends to (cache included). Tokens are kept in
    the KV cache itself, so rolling the cache back (or not) is exactly what changes s."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.log_table = table.log().float().to(DEVICE)  # (2, V, V)
        self.device = DEVICE

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=True, cache=None):
        width = input_ids.shape[1]
        as_kv = input_ids[:, None, :, None].float()  # (B, heads 1, W, 1)
        held, _ = cache.update(as_kv, as_kv, 0)
        tokens = held[:, 0, :, 0].long()  # (B, cached + W)
        if attention_mask is not None:
            tokens = tokens * attention_mask  # holes are not attended to
        parity = tokens.cumsum(-1)[:, -width:] % 2  # each query attends to itself and everything before it
        return SimpleNamespace(logits=self.log_table[parity, input_ids])


STUB_V = 4
_g = torch.Generator().manual_seed(0)
STUB_P = torch.softmax(2 * torch.randn(2, STUB_V, STUB_V, generator=_g, dtype=torch.float64), -1)
STUB_Q = torch.softmax(2 * torch.randn(1, STUB_V, STUB_V, generator=_g, dtype=torch.float64), -1).expand(
    2, -1, -1
)


def context_pvalues(rows: int = 1500, new_tokens: int = 20) -> tuple[int, np.ndarray]:
    """Run the real loop (replay.batch, one shared generator) for rows x new_tokens >= 30,000 emitted tokens; per
    context state (parity, previous token), a chi-square test of the emitted token against the target's table."""
    from replay.batch import speculative_generate_batch

    prompts = [[i % STUB_V] for i in range(rows)]
    with torch.inference_mode():
        runs = speculative_generate_batch(
            ParityLM(STUB_P), ParityLM(STUB_Q), prompts, tau=3, max_new_tokens=new_tokens, sampling=Sampling(1.0),
            rule=Rule("rejection"), generators=torch.Generator(DEVICE).manual_seed(1), vocab_size=STUB_V,
        )  # fmt: skip
    counts = np.zeros((2, STUB_V, STUB_V))
    for prompt, run in zip(prompts, runs):
        seq = prompt + run.token_ids
        for u in range(len(prompt), len(seq)):
            counts[sum(seq[:u]) % 2, seq[u - 1], seq[u]] += 1
    expected = (STUB_P / STUB_P.sum(-1, keepdim=True)).numpy() * counts.sum(-1, keepdims=True)
    pvalues = stats.chisquare(counts.reshape(-1, STUB_V), expected.reshape(-1, STUB_V), axis=-1).pvalue
    return int(counts.sum()), pvalues


def test_the_loop_emits_the_targets_context_distribution():
    draws, pvalues = context_pvalues()
    assert draws >= N_DRAWS
    assert adjusted(pvalues).min() > 0.01


def test_negative_control_cache_not_rolled_back_fails(monkeypatch):
    # the target's cache (created first) keeps rejected drafts: they stay in its context
    from replay import batch

    created = []

    class StaleTarget(batch.RaggedCache):
        def __init__(self, *args):
            super().__init__(*args)
            created.append(self)

        def keep(self, lengths):
            if self is not created[0]:
                super().keep(lengths)

    monkeypatch.setattr(batch, "RaggedCache", StaleTarget)
    draws, pvalues = context_pvalues()
    assert draws >= N_DRAWS
    assert adjusted(pvalues).min() < 1e-6
