"""The speculative loop (draft proposes, target verifies, caches roll back) and the target-alone baseline.

Batch 1: one prompt at a time; replay.batch runs several rows together with the same per-row results. The
statistics (what was drafted, kept, how confident the target was, how far the emitted distribution is from the
target's) come out of the loop itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from replay.cache import forward, new_cache, rollback
from replay.rules import Rule, emitted_distribution, judging_distribution, total_variation, verify
from replay.sampling import Sampling, distribution, entropy_and_margin, sample
from replay.timing import StageClock


@dataclass
class Step:
    """One verify pass: `drafted` tokens proposed, the first `accepted` kept, then one target token."""

    step: int
    drafted: int
    accepted: int
    draft_ms: float = 0.0
    verify_ms: float = 0.0
    # per drafted token: position, token_id, q, p, accepted, entropy (nats), margin (top-1 minus top-2 probability)
    tokens: list[dict[str, Any]] = field(default_factory=list)
    tv: list[float] = field(default_factory=list)  # TV(emitted, p) at each verified position


@dataclass
class Generation:
    token_ids: list[int]
    steps: list[Step]
    draft_ms: float
    verify_ms: float


def speculative_generate(
    target: Any,
    draft: Any,
    prompt_ids: list[int],
    *,
    tau: int,
    max_new_tokens: int,
    sampling: Sampling,
    rule: Rule,
    generator: torch.Generator | None,
    vocab_size: int,
    eos_token_id: int | None = None,
) -> Generation:
    """Leviathan et al. 2023 Algorithm 1 with KV caches. Invariant at the start of a step: the target's cache holds
    every committed token but the last (which the verify pass feeds); the draft's cache holds a prefix of them."""
    clock = StageClock(target.device)
    seq = list(prompt_ids)
    t_cache, d_cache = new_cache(), new_cache()
    if len(seq) > 1:  # prefill (not timed: both runs pay it equally)
        forward(target, seq[:-1], t_cache, vocab_size)
        forward(draft, seq[:-1], d_cache, vocab_size)
    out: list[int] = []
    steps: list[Step] = []
    while len(out) < max_new_tokens:
        n = min(tau, max_new_tokens - len(out) - 1)  # draft tokens this step; the target adds one more
        drafted: list[int] = []
        q_logits: list[torch.Tensor] = []
        q_rows: list[torch.Tensor] = []  # q: exactly the distributions the draft sampled from
        with clock.measure("draft", len(steps)):
            for _ in range(n):
                unseen = (seq + drafted)[d_cache.get_seq_length() :]  # tokens the draft's cache lacks
                logits = forward(draft, unseen, d_cache, vocab_size)[0, -1]  # (V,)
                q_i = distribution(logits, sampling)
                drafted.append(int(sample(q_i, generator, sampling.greedy)))
                q_logits.append(logits)
                q_rows.append(q_i)
        with clock.measure("verify", len(steps)):
            # p: the target's distributions at the n drafted positions and the bonus position, (n + 1, V)
            t_logits = forward(target, [seq[-1], *drafted], t_cache, vocab_size)[0]
            p = distribution(t_logits, sampling)
            q = torch.stack(q_rows) if n else p[:0]
            ids = torch.tensor([drafted], dtype=torch.long, device=p.device)  # (1, n)
            judged = judging_distribution(rule, t_logits, sampling.greedy)
            judged = None if judged is None else judged[None]
            k_t, next_t = verify(rule, ids, q[None], p[None], generator, judged)
        k, next_token = int(k_t), int(next_t)
        q_l = torch.stack(q_logits) if n else t_logits[:0]
        steps += record_steps(
            [len(steps)], ids, [k], q_l[None], t_logits[None], q[None], p[None], sampling, rule
        )
        cut_at_eos(steps[-1], drafted[:k], eos_token_id)
        new = [*drafted[:k], next_token]
        # keep committed tokens + accepted drafts; next_token is fed next step
        rollback(t_cache, len(seq) + k)
        rollback(d_cache, min(d_cache.get_seq_length(), len(seq) + k))
        seq += new
        out += new
        if eos_token_id is not None and eos_token_id in new:
            out = out[: out.index(eos_token_id) + 1]
            break
    times = clock.resolve()
    for s in steps:
        s.draft_ms = times.get(("draft", s.step), 0.0)
        s.verify_ms = times.get(("verify", s.step), 0.0)
    return Generation(out, steps, clock.total("draft"), clock.total("verify"))


def record_steps(
    index: list[int],
    drafted: torch.Tensor,
    accepted: list[int],
    q_logits: torch.Tensor,
    t_logits: torch.Tensor,
    q: torch.Tensor,
    p: torch.Tensor,
    sampling: Sampling,
    rule: Rule,
) -> list[Step]:
    """Per-token evidence of one step of R rows that each drafted n tokens: drafted (R, n) ids, q_logits and q
    (R, n, V) from the draft, t_logits and p (R, n + 1, V) from the target, accepted[r] kept by row r.

    Reported p and q are the distributions the rule used; for greedy runs (where those are one-hot) they are the
    models' own softmax probabilities, which the argmax was taken over.
    """
    rows, n = drafted.shape
    steps = [Step(i, n, k) for i, k in zip(index, accepted)]
    if n == 0:
        return steps
    ids = drafted.unsqueeze(-1)
    if sampling.greedy:
        q_show = torch.softmax(q_logits, -1).gather(-1, ids).squeeze(-1)
        p_show = torch.softmax(t_logits[:, :n], -1).gather(-1, ids).squeeze(-1)
    else:
        q_show = q.gather(-1, ids).squeeze(-1)
        p_show = p[:, :n].gather(-1, ids).squeeze(-1)
    entropy, margin = entropy_and_margin(t_logits[:, :n])
    # Exact losslessness check, in float64, renormalised so that float32 rounding of the softmax does not show up
    # as a TV of ~1e-7. Computed at all n positions; each row reports its verified ones (the accepted ones and the
    # first rejection).
    p64, q64 = p[:, :n].double(), q.double()
    p64, q64 = p64 / p64.sum(-1, keepdim=True), q64 / q64.sum(-1, keepdim=True)
    judged = judging_distribution(rule, t_logits[:, :n], sampling.greedy)
    judged64 = None if judged is None else judged.double()
    tv = total_variation(emitted_distribution(rule, p64, q64, judged64), p64)  # (R, n)
    columns = zip(*(x.tolist() for x in (drafted, q_show, p_show, entropy, margin, tv)))
    for step, (tokens, q_r, p_r, entropy_r, margin_r, tv_r) in zip(steps, columns):
        for i in range(n):
            step.tokens.append(
                {
                    "position": i,
                    "token_id": tokens[i],
                    "q": q_r[i],
                    "p": p_r[i],
                    "accepted": i < step.accepted,
                    "entropy": entropy_r[i],
                    "margin": margin_r[i],
                }
            )
        step.tv = tv_r[: min(step.accepted + 1, n)]
        if step.accepted == n:
            step.tv.append(0.0)  # the bonus token is drawn from p itself
    return steps


def cut_at_eos(step: Step, kept: list[int], eos_token_id: int | None) -> None:
    """End a step at an EOS among its accepted drafts (``kept``): the drafts after it are never emitted, so they are
    not counted as drafted or accepted either (the request's last step is cut short, as the trace format allows)."""
    if eos_token_id is None or eos_token_id not in kept:
        return
    j = kept.index(eos_token_id) + 1
    step.drafted = step.accepted = j
    step.tokens = step.tokens[:j]
    step.tv = step.tv[:j]


@dataclass
class Baseline:
    token_ids: list[int]
    logit_margins: list[float]  # target top-1 minus top-2 logit at each generated position
    ms: float


def target_generate(
    target: Any,
    prompt_ids: list[int],
    *,
    max_new_tokens: int,
    sampling: Sampling,
    generator: torch.Generator | None,
    vocab_size: int,
    eos_token_id: int | None = None,
) -> Baseline:
    """The target alone, one token per forward pass (timed the same way as the speculative loop)."""
    clock = StageClock(target.device)
    cache = new_cache()
    seq = list(prompt_ids)
    if len(seq) > 1:
        forward(target, seq[:-1], cache, vocab_size)
    out: list[int] = []
    margins: list[float] = []
    while len(out) < max_new_tokens:
        with clock.measure("target", len(out)):
            logits = forward(target, seq[-1:], cache, vocab_size)[0, -1]
            token = int(sample(distribution(logits, sampling), generator, sampling.greedy))
        top2 = logits.topk(2).values
        margins.append(float(top2[0] - top2[1]))
        seq.append(token)
        out.append(token)
        if token == eos_token_id:
            break
    return Baseline(out, margins, clock.total("target"))
