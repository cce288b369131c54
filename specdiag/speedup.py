"""Expected tokens per verify step and the speedup of speculative decoding over the target alone.

Shared by recommend, diagnose (tau findings), explain and the simulator's ground truth. Units: milliseconds for
times, tokens for lengths; ``tau`` is the number of draft tokens proposed per verify step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from numpy.polynomial import polynomial as P

MAX_TAU = 16  # the default --max-tau
TAU_LIMIT = 64  # the largest tau recommend models (--max-tau, --tau, a logged tau)


def expected_tokens_iid(alpha: float, tau: int) -> float:
    """Tokens emitted per verify step when each draft token is accepted i.i.d. with probability alpha.

    Leviathan et al. 2023 (arXiv 2211.17192) Eq. (1): E[#tokens] = (1 - alpha^(tau+1)) / (1 - alpha).
    """
    if tau < 0:
        raise ValueError("tau must be >= 0")
    if alpha >= 1.0:
        return float(tau + 1)
    return (1.0 - alpha ** (tau + 1)) / (1.0 - alpha)


def expected_tokens(cond_alpha: Sequence[float] | np.ndarray, tau: int) -> float:
    """Tokens emitted per verify step from per-position *conditional* acceptance.

    cond_alpha[i] = P(draft token i+1 accepted | tokens 1..i accepted). The step emits the accepted prefix plus one
    token of the target's own, so E = 1 + sum_{k=1..tau} prod_{i<=k} cond_alpha[i-1]. With a constant cond_alpha
    this is Eq. (1) above. cond_alpha must have at least tau entries.
    """
    if tau == 0:
        return 1.0
    a = np.asarray(cond_alpha, dtype=float)[:tau]
    if a.size < tau:
        raise ValueError(f"need acceptance for {tau} positions, got {a.size}")
    return float(1.0 + np.cumprod(a).sum())


def alpha_from_mal(mal: float, tau: int) -> float:
    """Solve the i.i.d. acceptance alpha from a mean acceptance length (tokens per verify step) and tau.

    Inverts Eq. (1): find alpha in [0, 1] with (1 - alpha^(tau+1)) / (1 - alpha) = mal. MAL is clipped to [1, tau+1].

    Eq. (1) is the polynomial 1 + a + ... + a^tau = mal. Its coefficients change sign once, so it has one positive
    root (Descartes), and every root z has |z| >= that root (|mal| = |sum z^k| <= sum |z|^k): alpha is the root of
    least modulus. numpy finds the roots (companion-matrix eigenvalues) and two Newton steps polish alpha.
    (No scipy here: its import costs `specdiag summary` 0.6 s.)
    """
    if tau <= 0 or not np.isfinite(mal):
        return float("nan")
    if mal <= 1.0:
        return 0.0
    if mal >= tau + 1:
        return 1.0
    poly = np.array([1.0 - mal] + [1.0] * tau)  # coefficients of a^0 .. a^tau
    roots = P.polyroots(poly)
    alpha = float(roots[np.argmin(np.abs(roots))].real)
    for _ in range(2):
        alpha -= P.polyval(alpha, poly) / P.polyval(alpha, P.polyder(poly))
    return min(max(alpha, 0.0), 1.0)


def speedup_iid(alpha: float, tau: int, cost_ratio: float) -> float:
    """Leviathan et al. 2023 Thm 3.8: walltime improvement (1 - alpha^(tau+1)) / ((1 - alpha)(tau*c + 1)),
    assuming verifying tau+1 tokens costs the same as generating one (constant verify cost)."""
    return expected_tokens_iid(alpha, tau) / (tau * cost_ratio + 1.0)


@dataclass(frozen=True)
class CostModel:
    """Forward-pass costs of a target/draft pair.

    t_target(n, B) = floor_ms + compute_ms * n * B: one target forward pass scoring n tokens for each of B sequences.
    The floor is the memory-bound cost (reading the weights once); the compute term grows with the tokens in flight,
    so verifying tau+1 tokens is almost free at small batch and costly at large batch.
    draft_ms_per_token: one draft forward pass producing one token (per step, independent of batch here).
    """

    floor_ms: float
    compute_ms: float
    draft_ms_per_token: float

    def target_ms(
        self, n_tokens: int | np.ndarray, batch_size: float | np.ndarray = 1.0
    ) -> float | np.ndarray:
        return self.floor_ms + self.compute_ms * n_tokens * batch_size

    def step_ms(self, tau: int, batch_size: float = 1.0) -> float:
        """Wall time of one speculative step: tau draft passes, then one verify pass over tau+1 tokens."""
        return float(tau * self.draft_ms_per_token + self.target_ms(tau + 1, batch_size))

    def cost_ratio(self, batch_size: float = 1.0) -> float:
        """c = draft forward time / target forward time (one token)."""
        return float(self.draft_ms_per_token / self.target_ms(1, batch_size))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def speedup(
    cond_alpha: Sequence[float] | np.ndarray | float, tau: int, cost: CostModel, batch_size: float = 1.0
) -> float:
    """Speedup over the target alone at batch size B (tau = 0 gives exactly 1).

    tokens per step x t_target(1, B) / (tau * t_draft + t_target(tau+1, B)). With compute_ms = 0 and a scalar alpha
    this reduces to Thm 3.8 with c = draft_ms_per_token / floor_ms.
    """
    if tau == 0:
        return 1.0
    if np.isscalar(cond_alpha):
        tokens = expected_tokens_iid(float(cond_alpha), tau)  # type: ignore[arg-type]
    else:
        tokens = expected_tokens(cond_alpha, tau)  # type: ignore[arg-type]
    return tokens * float(cost.target_ms(1, batch_size)) / cost.step_ms(tau, batch_size)


def speedup_curve(
    cond_alpha: Sequence[float] | np.ndarray | float,
    cost: CostModel,
    batch_size: float = 1.0,
    max_tau: int = MAX_TAU,
) -> list[dict[str, float]]:
    """[{tau, expected_tokens_per_step, speedup}] for tau = 0..max_tau."""
    if np.isscalar(cond_alpha):
        tokens = [expected_tokens_iid(float(cond_alpha), tau) for tau in range(max_tau + 1)]  # type: ignore[arg-type]
    else:
        # expected_tokens for every tau at once: 1 + the running sums of the running products
        a = np.asarray(cond_alpha, dtype=float)[:max_tau]
        if a.size < max_tau:
            raise ValueError(f"need acceptance for {max_tau} positions, got {a.size}")
        tokens = [1.0, *(1.0 + np.cumsum(np.cumprod(a))).tolist()]
    t1 = float(cost.target_ms(1, batch_size))
    return [
        {
            "tau": tau,
            "expected_tokens_per_step": tokens[tau],
            # as speedup(): tokens per step x t_target(1, B) / (tau t_draft + t_target(tau + 1, B)); tau = 0 is 1
            "speedup": 1.0 if tau == 0 else tokens[tau] * t1 / cost.step_ms(tau, batch_size),
        }
        for tau in range(max_tau + 1)
    ]


def best_tau(curve: list[dict[str, float]]) -> int:
    """The tau of highest speedup; ties go to the smaller tau (less draft work for the same gain)."""
    best = max(curve, key=lambda r: (round(r["speedup"], 12), -r["tau"]))
    return int(best["tau"])
