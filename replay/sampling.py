"""Turning logits into the distributions the acceptance rules compare: one function for p and q alike.

The draft samples from exactly the q that the rule later divides by; a draft that samples from one distribution
while reporting another silently breaks losslessness, so both models go through :func:`distribution`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    """temperature 0 means greedy (the distribution is the one-hot argmax); top_p in (0, 1] is nucleus sampling."""

    temperature: float = 0.0
    top_p: float = 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def distribution(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """Probabilities (..., V) in float32 that the model samples from under `sampling`.

    Greedy: one-hot of the argmax. Otherwise softmax(logits / T), then top-p: keep the smallest set of most probable
    tokens whose mass reaches top_p (the first token always kept) and renormalise.
    """
    logits = logits.float()
    if sampling.greedy:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    # the largest logit subtracted first: at a tiny temperature (1e-40) logits / T overflow to inf, and inf - inf
    # inside softmax is nan; this way the largest becomes 0 and the rest -inf (probability 0)
    probs = torch.softmax((logits - logits.amax(-1, keepdim=True)) / sampling.temperature, dim=-1)
    if sampling.top_p >= 1.0:
        return probs
    sorted_p, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_p.cumsum(-1) - sorted_p  # mass of the strictly more probable tokens
    # the first token always kept: a top_p below float32's smallest number would otherwise keep none
    first = torch.arange(sorted_p.shape[-1], device=sorted_p.device) == 0
    sorted_p = torch.where((mass_before < sampling.top_p) | first, sorted_p, torch.zeros_like(sorted_p))
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return kept / kept.sum(-1, keepdim=True)


def sample(probs: torch.Tensor, generator: torch.Generator | None, greedy: bool = False) -> torch.Tensor:
    """One token id per row of probs (..., V). ``greedy``: the rows are one-hot (``distribution`` at temperature
    0), so the draw is their argmax; taken directly, as ``torch.multinomial`` costs a kernel call per draw on CPU."""
    if greedy:
        return probs.argmax(-1)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])


def entropy_and_margin(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's own confidence at temperature 1: entropy H = -sum p log p (nats) and top-1 minus top-2 probability."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    top2 = logp.exp().topk(2, dim=-1).values
    return entropy, top2[..., 0] - top2[..., 1]
