"""The speculative loop and the target-alone baseline for B prompts at once, each row keeping its own lengths.

Same algorithm as replay.engine (Leviathan et al. 2023 Algorithm 1), row by row: each verify step row b keeps its own
prefix k_b of its own n_b drafts. Nothing is forced to a common length: the rows share rectangular KV caches
(replay.cache.RaggedCache) in which padding and rejected drafts become masked holes, and every model call passes
each row's own positions, so a row attends to exactly the tokens it would attend to alone, at the same positions.

Random draws: with one generator per row (a list), each row draws exactly what the batch-1 loop draws with that
generator, in the same order, so per-row outputs and statistics equal the batch-1 loop's up to float rounding
(batched matrix products may round differently, which can only matter at a near-tie). With one shared generator
(or None) the draws are made for all rows at once: independent draws, the same distribution, fewer kernel calls.

Timing: a batched stage is one measurement shared by the rows in it; each row is charged an equal share
(stage ms / rows in the step), so the rows' draft_ms and verify_ms add up to the batch's wall (or CUDA) time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from replay.cache import RaggedCache
from replay.engine import Baseline, Generation, Step, cut_at_eos, record_steps
from replay.rules import Rule, judging_distribution, verify
from replay.sampling import Sampling, distribution, sample
from replay.timing import StageClock

# one generator per row (batch-1 draws, row by row), or one for the whole batch (vectorised draws), or None
Generators = torch.Generator | list[torch.Generator | None] | None


def _unseen(seq: list[int], drafted: list[int], held: int) -> list[int]:
    """The tokens of seq + drafted past the first `held` (those a cache holding `held` tokens lacks)."""
    return seq[held:] + drafted[max(0, held - len(seq)) :]


def _draw(probs: torch.Tensor, rows: list[int], generators: Generators, greedy: bool) -> list[int]:
    """One token per row of probs (R, V); rows[r] is the prompt index whose generator row r uses."""
    if greedy:  # one-hot rows: no generator is consumed, in batch 1 either
        drawn = sample(probs, None, greedy=True)
    elif isinstance(generators, list):
        drawn = torch.stack([sample(probs[r], generators[i]) for r, i in enumerate(rows)])
    else:
        drawn = sample(probs, generators)
    return [int(t) for t in drawn.tolist()]  # one device sync for the whole batch


def _verify(
    rule: Rule,
    drafted: torch.Tensor,
    q: torch.Tensor,
    p: torch.Tensor,
    rows: list[int],
    generators: Generators,
    judged: torch.Tensor | None = None,
) -> tuple[list[int], list[int]]:
    """replay.rules.verify on R rows that drafted the same number of tokens: (accepted, next_token) per row."""
    if isinstance(generators, list):
        pairs = [
            verify(rule, drafted[r : r + 1], q[r : r + 1], p[r : r + 1], generators[i], _rows(judged, r))
            for r, i in enumerate(rows)
        ]
        k, t = torch.cat([k for k, _ in pairs]), torch.cat([t for _, t in pairs])
    else:
        k, t = verify(rule, drafted, q, p, generators, judged)
    return k.tolist(), t.tolist()


def _rows(x: torch.Tensor | None, r: int) -> torch.Tensor | None:
    return None if x is None else x[r : r + 1]


def speculative_generate_batch(
    target: Any,
    draft: Any,
    prompts: list[list[int]],
    *,
    tau: int,
    max_new_tokens: int,
    sampling: Sampling,
    rule: Rule,
    generators: Generators,
    vocab_size: int,
    eos_token_id: int | None = None,
) -> list[Generation]:
    """replay.engine.speculative_generate for every prompt, run together. Invariant per row at the start of a step,
    as in batch 1: the target's cache holds every committed token but the last; the draft's holds a prefix of them."""
    device = target.device
    clock = StageClock(device)
    seqs = [list(p) for p in prompts]
    outs: list[list[int]] = [[] for _ in prompts]
    steps: list[list[Step]] = [[] for _ in prompts]
    shares: list[list[tuple[int, int]]] = [[] for _ in prompts]  # per row step: (batched step, its rows)
    t_cache, d_cache = RaggedCache(len(prompts), device), RaggedCache(len(prompts), device)
    t_cache.forward(target, [s[:-1] for s in seqs], vocab_size)  # prefill (not timed, as in batch 1)
    d_cache.forward(draft, [s[:-1] for s in seqs], vocab_size)
    live = list(range(len(prompts)))  # cache row c holds prompt live[c]
    batch_step = 0
    while live:
        n = [min(tau, max_new_tokens - len(outs[i]) - 1) for i in live]  # draft tokens per row this step
        with clock.measure("draft", batch_step):
            d = _propose(draft, d_cache, [seqs[i] for i in live], live, n, sampling, generators, vocab_size)
        with clock.measure("verify", batch_step):
            # p: each row's target distributions at its n drafted positions and the bonus position, (R, n + 1, V)
            t_logits = t_cache.forward(
                target, [[seqs[i][-1], *d.tokens[c]] for c, i in enumerate(live)], vocab_size
            )
            p = distribution(t_logits, sampling)
            judged = judging_distribution(rule, t_logits, sampling.greedy)
            accepted, next_token = [0] * len(live), [0] * len(live)
            # rows that drafted the same number of tokens verify together
            for size, group in _by_size(n, device):
                k_g, t_g = _verify(rule, d.ids[group, :size], d.q[group, :size], p[group, : size + 1],
                                   [live[c] for c in group.tolist()], generators,
                                   None if judged is None else judged[group, : size + 1])  # fmt: skip
                for c, k, t in zip(group.tolist(), k_g, t_g):
                    accepted[c], next_token[c] = k, t
        for size, group in _by_size(n, device):
            rows = group.tolist()
            recorded = record_steps(
                [len(steps[live[c]]) for c in rows], d.ids[group, :size], [accepted[c] for c in rows],
                d.q_logits[group, :size], t_logits[group, : size + 1], d.q[group, :size], p[group, : size + 1],
                sampling, rule,
            )  # fmt: skip
            for c, step in zip(rows, recorded):
                cut_at_eos(step, d.tokens[c][: accepted[c]], eos_token_id)
                steps[live[c]].append(step)
                shares[live[c]].append((batch_step, len(live)))
        # keep committed tokens + accepted drafts (next_token is fed next step); the draft keeps a prefix of them
        t_cache.keep(torch.tensor([len(seqs[i]) + accepted[c] for c, i in enumerate(live)]))
        d_cache.keep(torch.tensor([min(d.held[c], len(seqs[i]) + accepted[c]) for c, i in enumerate(live)]))
        still = []
        for c, i in enumerate(live):
            new = [*d.tokens[c][: accepted[c]], next_token[c]]
            seqs[i] += new
            outs[i] += new
            if eos_token_id is not None and eos_token_id in new:
                outs[i] = outs[i][: outs[i].index(eos_token_id) + 1]
            elif len(outs[i]) < max_new_tokens:
                still.append(c)
        _shrink((t_cache, d_cache), still, len(live))
        live = [live[c] for c in still]
        batch_step += 1
    times = clock.resolve()
    results = []
    for i in range(len(prompts)):
        for step, (b, size) in zip(steps[i], shares[i]):
            step.draft_ms = times.get(("draft", b), 0.0) / size
            step.verify_ms = times.get(("verify", b), 0.0) / size
        draft_ms = sum(s.draft_ms for s in steps[i])
        results.append(Generation(outs[i], steps[i], draft_ms, sum(s.verify_ms for s in steps[i])))
    return results


@dataclass
class _Proposal:
    """What the draft proposed this step: row c drafted tokens[c] (n[c] ids), padded into ids (R, n_max); q_logits
    and q (R, n_max, V) are its logits and exactly the distributions it sampled from; held[c] = tokens now in its
    draft cache row."""

    tokens: list[list[int]]
    ids: torch.Tensor
    q_logits: torch.Tensor
    q: torch.Tensor
    held: list[int]


def _propose(
    draft: Any,
    cache: RaggedCache,
    seqs: list[list[int]],
    live: list[int],
    n: list[int],
    sampling: Sampling,
    generators: Generators,
    vocab_size: int,
) -> _Proposal:
    """Each row drafts n[c] tokens autoregressively (all rows in one draft pass per token)."""
    device = cache.valid.device
    rows, width = len(seqs), max(n)
    d = _Proposal(
        tokens=[[] for _ in seqs],
        ids=torch.zeros((rows, width), dtype=torch.long, device=device),
        q_logits=torch.zeros((rows, width, vocab_size), device=device),
        q=torch.zeros((rows, width, vocab_size), device=device),
        held=cache.lengths(),
    )
    for j in range(width):
        # rows still drafting feed what their draft cache lacks; the others feed nothing (a hole)
        chunks = [_unseen(seqs[c], d.tokens[c], d.held[c]) if j < n[c] else [] for c in range(rows)]
        logits = cache.forward(draft, chunks, vocab_size)  # (R, W, V)
        active = [c for c in range(rows) if j < n[c]]
        at = torch.tensor(active, device=device)
        last = logits[at, torch.tensor([len(chunks[c]) - 1 for c in active], device=device)]  # (A, V)
        q_j = distribution(last, sampling)
        tokens = _draw(q_j, [live[c] for c in active], generators, sampling.greedy)
        for c, token in zip(active, tokens):
            d.held[c] += len(chunks[c])
            d.tokens[c].append(token)
        d.ids[at, j] = torch.tensor(tokens, device=device)
        d.q_logits[at, j], d.q[at, j] = last, q_j
    return d


def _by_size(n: list[int], device: torch.device) -> list[tuple[int, torch.Tensor]]:
    """(size, rows that drafted `size` tokens) for each size present."""
    return [
        (size, torch.tensor([c for c, m in enumerate(n) if m == size], device=device))
        for size in sorted(set(n))
    ]


def _shrink(caches: tuple[RaggedCache, ...], still: list[int], rows: int) -> None:
    """Finished rows leave the batch (they stop costing compute); slots no row uses any more are cropped."""
    for cache in caches:
        if len(still) < rows:
            cache.select(still)
        cache.compact()


def target_generate_batch(
    target: Any,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    sampling: Sampling,
    generators: Generators,
    vocab_size: int,
    eos_token_id: int | None = None,
) -> list[Baseline]:
    """replay.engine.target_generate for every prompt, run together: one token per row per forward pass, its time
    shared equally by the rows in it (so that speedup compares like with like when both loops run batched)."""
    clock = StageClock(target.device)
    seqs = [list(p) for p in prompts]
    outs: list[list[int]] = [[] for _ in prompts]
    margins: list[list[float]] = [[] for _ in prompts]
    shares: list[list[tuple[int, int]]] = [[] for _ in prompts]
    cache = RaggedCache(len(prompts), target.device)
    cache.forward(target, [s[:-1] for s in seqs], vocab_size)
    live = list(range(len(prompts)))
    batch_step = 0
    while live:
        with clock.measure("target", batch_step):
            logits = cache.forward(target, [seqs[i][-1:] for i in live], vocab_size)[:, -1]  # (R, V)
            tokens = _draw(distribution(logits, sampling), live, generators, sampling.greedy)
        top2 = logits.topk(2, dim=-1).values
        still = []
        for c, (i, margin) in enumerate(zip(live, (top2[:, 0] - top2[:, 1]).tolist())):
            margins[i].append(margin)
            shares[i].append((batch_step, len(live)))
            seqs[i].append(tokens[c])
            outs[i].append(tokens[c])
            if tokens[c] != eos_token_id and len(outs[i]) < max_new_tokens:
                still.append(c)
        _shrink((cache,), still, len(live))
        live = [live[c] for c in still]
        batch_step += 1
    times = clock.resolve()
    return [
        Baseline(outs[i], margins[i], sum(times.get(("target", b), 0.0) / size for b, size in shares[i]))
        for i in range(len(prompts))
    ]
