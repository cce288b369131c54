"""Acceptance rules: which prefix of the draft to keep, and which token the target emits after it.

Every rule is written as two pieces on probability vectors, so that one code path both *runs* the rule
(:func:`verify`) and *computes exactly* the distribution it emits (:func:`emitted_distribution`):

- ``acceptance_probability(x)``: the chance a drafted token x (drawn from q) is kept;
- ``recovery``: the distribution the emitted token is drawn from when x is rejected.

A position then emits  e(y) = q(y) a(y) + (1 - sum_x q(x) a(x)) r(y).

Rules (p: target probability, q: draft probability, both after the same temperature/top-p):
- ``strict``: greedy. a(x) = [x = argmax p], r = one-hot(argmax p). Emits argmax p: the target's greedy output.
- ``rejection``: Leviathan et al. 2023 (arXiv 2211.17192) Sec. 2.3 / Chen et al. 2023 (arXiv 2302.01318) Alg. 2.
  a(x) = min(1, p(x) / q(x)), r = norm(max(0, p - q)). Then e = min(p, q) + max(0, p - q) = p: lossless (Thm 3.5's
  argument, Leviathan et al. Appendix A.1).
- ``typical``: the posterior-threshold rule of Medusa (Cai et al. 2024), as in vLLM's typical acceptance sampler.
  a(x) = [p(x) > min(epsilon, delta * exp(-H(p)))], r = one-hot(argmax p). Lossy: e differs from p. Greedy
  (temperature 0), p is one-hot and the rule would be strict; as vLLM does for greedy requests, it then judges
  drafts by the target's softmax at temperature 1 (:func:`judging_distribution`), and stays lossy.
When every drafted token is kept, the bonus token is drawn from the target's next distribution p_{n+1} (all rules).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

RULES = ("strict", "rejection", "typical")


@dataclass(frozen=True)
class Rule:
    name: str = "strict"
    typical_epsilon: float = 0.09  # posterior threshold (vLLM's default)
    typical_delta: float = 0.3  # posterior alpha: scales exp(-entropy) (vLLM's default)

    def __post_init__(self) -> None:
        if self.name not in RULES:
            raise ValueError(f"unknown acceptance rule {self.name!r}; expected one of {', '.join(RULES)}")


def judging_distribution(rule: Rule, logits: torch.Tensor, greedy: bool) -> torch.Tensor | None:
    """What the typical rule judges drafts by when decoding is greedy: the target's softmax at temperature 1, as vLLM
    computes it for greedy requests (at temperature 0 the one-hot p would make `typical` the strict rule and hide
    its loss). None otherwise: every rule judges by p itself."""
    if rule.name != "typical" or not greedy:
        return None
    return torch.softmax(logits.float(), dim=-1)


def acceptance_probability(rule: Rule, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """a(x) for every token x: (..., V) -> (..., V) in [0, 1]."""
    if rule.name == "strict":
        return torch.nn.functional.one_hot(p.argmax(-1), p.shape[-1]).to(p.dtype)
    if rule.name == "rejection":
        # min(1, p/q); where q(x) = 0 the token is never drafted, any value works: use 1.
        return torch.where(
            q > 0, (p / q.clamp_min(torch.finfo(q.dtype).tiny)).clamp(max=1.0), torch.ones_like(p)
        )
    logp = torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))
    entropy = -(p * logp).sum(-1, keepdim=True)  # nats
    threshold = torch.minimum(
        torch.full_like(entropy, rule.typical_epsilon), rule.typical_delta * torch.exp(-entropy)
    )
    return (p > threshold).to(p.dtype)


def recovery(rule: Rule, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """r: the distribution of the emitted token after a rejection, (..., V)."""
    if rule.name == "rejection":
        residual = (p - q).clamp_min(0.0)
        mass = residual.sum(-1, keepdim=True)
        # mass = 0 only when p = q, where rejection has probability 0; fall back to p to stay a distribution.
        return torch.where(mass > 0, residual / mass.clamp_min(torch.finfo(p.dtype).tiny), p)
    return torch.nn.functional.one_hot(p.argmax(-1), p.shape[-1]).to(p.dtype)


def emitted_distribution(
    rule: Rule, p: torch.Tensor, q: torch.Tensor, judged: torch.Tensor | None = None
) -> torch.Tensor:
    """The exact distribution of the token a verified draft position emits: e = q a + (1 - sum q a) r (a judged by
    `judged` when given, see judging_distribution)."""
    kept = q * acceptance_probability(rule, p if judged is None else judged, q)
    return kept + (1.0 - kept.sum(-1, keepdim=True)) * recovery(rule, p, q)


def total_variation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """TV(a, b) = 1/2 sum |a - b| over the last axis."""
    return 0.5 * (a - b).abs().sum(-1)


def verify(
    rule: Rule,
    draft_tokens: torch.Tensor,
    q: torch.Tensor,
    p: torch.Tensor,
    generator: torch.Generator | None = None,
    judged: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the rule on a batch of drafts.

    draft_tokens (B, n) drawn from q (B, n, V); p (B, n + 1, V) the target's distributions at the n drafted positions
    and the bonus position; judged (B, n + 1 or n, V), when given, what the rule judges drafts by instead of p
    (judging_distribution). Returns (accepted (B,): length of the kept prefix, next_token (B,): the target's token).
    """
    batch, n = draft_tokens.shape
    judged = p if judged is None else judged  # what the rule judges drafts by
    a = acceptance_probability(rule, judged[:, :n], q)
    a = a.gather(-1, draft_tokens.unsqueeze(-1)).squeeze(-1)  # (B, n)
    u = torch.rand((batch, n), generator=generator, device=p.device, dtype=p.dtype)
    keep = (u < a).long()
    accepted = keep.cumprod(-1).sum(-1)  # (B,) leading run of kept tokens
    rows = torch.arange(batch, device=p.device)
    p_next = p[rows, accepted]  # (B, V)
    q_pad = torch.cat([q, torch.zeros_like(p[:, :1])], dim=1)  # q at the bonus position: nothing drafted
    r = recovery(rule, p_next, q_pad[rows, accepted])
    dist = torch.where((accepted == n).unsqueeze(-1), p_next, r)
    next_token = torch.multinomial(dist, 1, generator=generator).squeeze(-1)
    return accepted, next_token
