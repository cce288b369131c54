"""Per-position conditional acceptance from censored step records.

A verify step that drafted ``d`` tokens and accepted ``a`` of them tells us, for each draft position i (1-based):

- positions 1..a were *tried and accepted*;
- position a+1 was *tried and rejected* when a < d;
- when a = d the step is right-censored at d: the draft might have been accepted further, had it drafted more.

The product-limit (Kaplan-Meier style) estimate of the conditional acceptance at position i is then

    alpha_i = P(token i accepted | tokens 1..i-1 accepted) = accepted_i / at_risk_i,

with ``at_risk_i`` = steps that tried position i (d >= i and a >= i-1) and ``accepted_i`` = steps with a >= i. Engine
windows give the same counts: ``accepted_per_position[i-1]`` = steps whose accepted count reached i, and with a
fixed tau every step tries position 1 and a step tries position i+1 exactly when it accepted position i (i < tau).

Beyond the last well-estimated position (at_risk >= ``min_at_risk``) we extrapolate with a geometric tail: a
constant conditional acceptance equal to the pooled ratio over the last ``tail_positions`` well-estimated positions.
That is the i.i.d. model of Leviathan et al. 2023 (arXiv 2211.17192) Eq. (1) applied to the tail only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from specdiag.speedup import MAX_TAU

MIN_AT_RISK = 30  # steps: below this a position's ratio is too noisy to use on its own
TAIL_POSITIONS = 3  # positions pooled for the geometric tail


@dataclass(frozen=True)
class AcceptanceEstimate:
    """cond_alpha[i] is the conditional acceptance of draft position i+1; positions >= n_estimated are the tail."""

    cond_alpha: np.ndarray  # (max_tau,) probabilities
    at_risk: np.ndarray  # (P,) steps that tried each logged position
    accepted: np.ndarray  # (P,) steps that accepted each logged position
    n_estimated: int  # positions estimated directly from the counts
    tail_alpha: float  # constant conditional acceptance used beyond n_estimated
    alpha: float  # pooled per-token acceptance: sum accepted / sum at_risk (constant-hazard MLE)
    extra: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "alpha": self.alpha,
            "alpha_by_position": [float(a) for a in self.cond_alpha],
            "estimated_positions": self.n_estimated,
            "tail_alpha": self.tail_alpha,
            "at_risk": [int(n) for n in self.at_risk],
        }


def counts_from_steps(
    drafted: Sequence[int] | np.ndarray, accepted: Sequence[int] | np.ndarray, max_pos: int = MAX_TAU
) -> tuple[np.ndarray, np.ndarray]:
    """(at_risk, accepted) per position 1..max_pos from step records (drafted = 0 steps try nothing)."""
    d = np.asarray(drafted, dtype=np.int64)[:, None]
    a = np.asarray(accepted, dtype=np.int64)[:, None]
    pos = np.arange(1, max_pos + 1)[None, :]
    at_risk = ((d >= pos) & (a >= pos - 1)).sum(axis=0)
    acc = ((d >= pos) & (a >= pos)).sum(axis=0)
    return at_risk.astype(float), acc.astype(float)


def counts_by_unit(
    unit: np.ndarray,
    drafted: np.ndarray,
    accepted: np.ndarray,
    steps: np.ndarray,
    n_units: int,
    max_pos: int = MAX_TAU,
) -> tuple[np.ndarray, np.ndarray]:
    """(at_risk, accepted), each (n_units, max_pos), from a histogram: ``steps`` verify steps of unit ``unit`` drafted
    ``drafted`` and accepted ``accepted``. Position i is at risk when d >= i and a >= i - 1, accepted when a >= i."""
    d, a, w = np.asarray(drafted), np.asarray(accepted), np.asarray(steps, dtype=float)
    at_risk = np.zeros((n_units, max_pos))
    acc = np.zeros((n_units, max_pos))
    for i in range(1, max_pos + 1):
        tried = (d >= i) & (a >= i - 1)
        if not tried.any():
            break
        at_risk[:, i - 1] = np.bincount(unit[tried], weights=w[tried], minlength=n_units)
        took = tried & (a >= i)
        acc[:, i - 1] = np.bincount(unit[took], weights=w[took], minlength=n_units)
    return at_risk, acc


def counts_from_windows(
    verify_steps: float, accepted_per_position: Sequence[float], tau: int, max_pos: int = MAX_TAU
) -> tuple[np.ndarray, np.ndarray]:
    """(at_risk, accepted) from an engine window with a fixed tau and per-position accepted counts."""
    acc = np.zeros(max_pos)
    at_risk = np.zeros(max_pos)
    apc = np.asarray(accepted_per_position, dtype=float)[: min(tau, max_pos)]
    acc[: apc.size] = apc
    at_risk[: apc.size] = np.concatenate([[verify_steps], apc[:-1]]) if apc.size else []
    return at_risk, acc


def hazard_matrix(
    at_risk: np.ndarray,
    accepted: np.ndarray,
    max_tau: int = MAX_TAU,
    min_at_risk: float = MIN_AT_RISK,
    tail_positions: int = TAIL_POSITIONS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised estimator over rows (e.g. bootstrap replicates).

    at_risk, accepted: (n, P). Returns (cond_alpha (n, max_tau), n_estimated (n,), tail_alpha (n,)). A row with no
    well-estimated position pools every position it has; a row with no data at all is NaN.
    """
    at_risk = np.atleast_2d(np.asarray(at_risk, dtype=float))
    accepted = np.atleast_2d(np.asarray(accepted, dtype=float))
    n, p = at_risk.shape
    well = at_risk >= min_at_risk
    # positions are estimated directly up to the first one that is not well estimated
    n_est = np.where(well.all(axis=1), p, np.argmin(well, axis=1))
    n_est = np.minimum(n_est, max_tau)
    idx = np.arange(p)[None, :]
    lo = np.maximum(n_est - tail_positions, 0)[:, None]
    in_tail = (idx >= lo) & (idx < n_est[:, None])
    # rows without a single well-estimated position: pool everything they have
    in_tail |= (n_est == 0)[:, None] & (at_risk > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tail = (accepted * in_tail).sum(axis=1) / (at_risk * in_tail).sum(axis=1)
        raw = accepted / at_risk
    out = np.repeat(tail[:, None], max_tau, axis=1)
    cols = min(p, max_tau)
    direct = idx[:, :cols] < n_est[:, None]
    out[:, :cols] = np.where(direct, raw[:, :cols], out[:, :cols])
    return np.clip(out, 0.0, 1.0), n_est, tail


def conditional_acceptance(
    at_risk: Sequence[float] | np.ndarray,
    accepted: Sequence[float] | np.ndarray,
    max_tau: int = MAX_TAU,
    min_at_risk: float = MIN_AT_RISK,
    tail_positions: int = TAIL_POSITIONS,
) -> AcceptanceEstimate:
    """Per-position conditional acceptance (product-limit) with a geometric tail beyond the logged positions."""
    r = np.asarray(at_risk, dtype=float)
    k = np.asarray(accepted, dtype=float)
    if r.shape != k.shape or r.ndim != 1:
        raise ValueError("at_risk and accepted must be 1-D arrays of the same length")
    if np.any(k > r + 1e-9) or np.any(k < 0):
        raise ValueError("accepted counts must lie in [0, at_risk]")
    cond, n_est, tail = hazard_matrix(r, k, max_tau, min_at_risk, tail_positions)
    total = r.sum()
    return AcceptanceEstimate(
        cond_alpha=cond[0],
        at_risk=r,
        accepted=k,
        n_estimated=int(n_est[0]),
        tail_alpha=float(tail[0]),
        alpha=float(k.sum() / total) if total > 0 else float("nan"),
    )
