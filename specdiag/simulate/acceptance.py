"""Per-position acceptance: the model each draft step is sampled from, and the pooled truth it implies.

Model (per request r, draft position i = 1..tau, all probabilities):

    a_i(r) = min(1, a_1 * decay^(i-1) * h_r),     h_r = 2 * Beta(k, k)   (mean 1, k = "difficulty")

a_i is the *conditional* acceptance: P(draft token i accepted | tokens 1..i-1 accepted). Acceptance decays with the
position (the draft drifts from the target the further it guesses) and varies by prompt through h_r (hard prompts
have h < 1). The reach probability P_k = prod_{i<=k} a_i is P(accepted >= k) for one verify step, so a step emits
E = 1 + sum_{k=1..tau} P_k tokens (Leviathan et al. 2023 Eq. 1 for constant a_i).

What a store query measures is *pooled* over steps, and a request of difficulty h contributes E[N | h] steps, where
N = steps to emit at least L tokens. Wald's identity gives E[N] = E[S_N] / mu with X = accepted + 1 the tokens of one
step, mu = E[X] and S_N the tokens emitted; for a lattice renewal process S_N - (L - 1) has (for L >> mu) the
stationary law P(k) = P(X >= k) / mu, so E[S_N] = L - 1 + E[X (X + 1)] / (2 mu) and
E[N | h] ~= (L - 1) / mu + E[X^2 + X] / (2 mu^2). So the pooled reach probability is sum_h w(h) P_k(h) / sum_h w(h) with
w(h) = E[N | h], evaluated by quadrature over the Beta quantiles of h. The pooled conditional acceptance is the ratio
of consecutive pooled reach probabilities.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

MAX_POSITIONS = 16
QUADRATURE_POINTS = 2000


def reach_probs(a1: np.ndarray, decay: np.ndarray, h: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """(R, 17) matrix: column k = P(accepted >= k) for k = 0..16, zero beyond each row's tau."""
    positions = np.arange(MAX_POSITIONS)  # i - 1
    cond = np.minimum(1.0, (a1 * h)[:, None] * np.asarray(decay)[:, None] ** positions[None, :])
    reach = np.ones((len(a1), MAX_POSITIONS + 1))
    reach[:, 1:] = np.cumprod(cond, axis=1)
    reach[:, 1:][positions[None, :] >= np.asarray(tau)[:, None]] = 0.0
    return reach


def sample_accepted(reach_rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Accepted draft tokens of steps, by inversion: accepted = #{k >= 1 : u < P_k} since P_k decreases in k."""
    return (u[:, None] < reach_rows[:, 1:]).sum(axis=1)


@lru_cache(maxsize=64)
def difficulty_quantiles(k: float, n: int = QUADRATURE_POINTS) -> np.ndarray:
    """n equally weighted points h = 2 * Beta(k, k) at the mid-quantiles (quadrature nodes for E_h[...])."""
    from scipy.stats import beta

    h = 2.0 * beta.ppf((np.arange(n) + 0.5) / n, k, k)
    h.flags.writeable = False
    return h


def step_weighted_reach(
    a1: float, decay: float, difficulty: float, mean_output_tokens: float
) -> tuple[np.ndarray, np.ndarray]:
    """For every tau = 0..16 at once: (sum_h w(h) P_k(h), shape (17 taus, 17 positions k = 0..16); sum_h w(h),
    shape (17,)), averaged over the quadrature nodes, with w(h) = E[N | h] the expected verify steps per request at
    that tau. P_k is given for all 16 positions (as if the draft kept going); only the step weights depend on tau.
    """
    h = difficulty_quantiles(difficulty)
    n = len(h)
    full = reach_probs(np.full(n, a1), np.full(n, decay), h, np.full(n, MAX_POSITIONS))  # (n, 17)
    mu = np.cumsum(full, axis=1)  # mu[:, tau] = E[X] at tau, X = accepted + 1 tokens per step
    second = np.cumsum(
        full * (2 * np.arange(MAX_POSITIONS + 1) + 1), axis=1
    )  # E[X^2] = sum_k (2k+1) P(X > k)
    w = (mean_output_tokens - 1) / mu + (second + mu) / (2 * mu**2)  # E[N | h], (n, 17 taus)
    return np.einsum("nt,nk->tk", w, full) / n, w.mean(axis=0)  # einsum: no BLAS threads for a tiny product


def conditional_from_reach(reach: np.ndarray) -> np.ndarray:
    """Conditional acceptance by position from reach probabilities: a_i = P_i / P_{i-1}."""
    reach = np.asarray(reach, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(reach[:-1] > 0, reach[1:] / np.where(reach[:-1] > 0, reach[:-1], 1.0), 0.0)
