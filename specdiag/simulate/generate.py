"""One block of requests in time order, with their verify steps, timings and outcomes, as numpy arrays.

Steps per request are not known in advance (they depend on acceptance), so steps are drawn in rounds: each round
draws a generous number of steps for every request that still needs tokens, and steps past the token target are
trimmed at the end. Steps are i.i.d. given the request, so trimming at the first step that reaches the target
(a stopping time) leaves the pooled acceptance unbiased (Wald's identity). No Python loop per step or per token.

Timing (ms), from the deployment's CostModel t(n, B) = floor + compute * n * B, scaled by verify_scale:
  draft_ms  = tau * draft_ms_per_token * noise      (tau sequential draft forward passes)
  verify_ms = t(tau + 1, B) * noise                 (one target pass scoring tau + 1 tokens per sequence)
  latency_ms = queue + prefill + sum of step times; ttft_ms = queue + prefill + first step
with mean-one log-normal noise (sigma 0.08), prefill = t(prompt_tokens, 1), queue ~ Exp(mean 15 ms x load^2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specdiag.simulate.acceptance import reach_probs
from specdiag.simulate.config import TASK_DEFAULTS, Fleet
from specdiag.simulate.incidents import TASKS, Params, resolve
from specdiag.simulate.prompts import PromptPool
from specdiag.simulate.traffic import Mix, load_factor

NOISE_SIGMA = 0.08
BATCH_SIGMA = 0.15
OUTPUT_SIGMA = 0.5  # log-normal spread of output length around the task mean
QUEUE_MS = 15.0
QUALITY_CONCENTRATION = 40.0


@dataclass
class Block:
    # requests (R,)
    index: np.ndarray  # global request number
    ts: np.ndarray  # arrival, epoch seconds
    dep: np.ndarray
    task: np.ndarray
    params: Params
    tau: np.ndarray  # effective tau (0 for control traffic)
    prompt: np.ndarray  # index into the PromptPool
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    batch_size: np.ndarray
    latency_ms: np.ndarray
    ttft_ms: np.ndarray
    quality: np.ndarray
    shadow: np.ndarray  # -1: no shadow comparison, 0: differs, 1: identical
    # steps (S,), grouped by request in request order
    step_req: np.ndarray  # request position within the block
    step: np.ndarray  # index within the request
    drafted: np.ndarray
    accepted: np.ndarray
    draft_ms: np.ndarray
    verify_ms: np.ndarray
    step_end: np.ndarray  # epoch seconds when the step finished


def _noise(rng: np.random.Generator, n: int, sigma: float = NOISE_SIGMA) -> np.ndarray:
    """Mean-one log-normal multiplicative noise."""
    return np.exp(sigma * rng.standard_normal(n) - sigma**2 / 2)


def draw_steps(
    rng: np.random.Generator, reach: np.ndarray, target_tokens: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(request of each step, accepted of each step), grouped by request, ending at the step that reaches
    target_tokens (steps emit accepted + 1 tokens)."""
    max_k = int((reach[:, 1:] > 0).sum(axis=1).max()) if len(reach) else 0
    mu = reach.sum(axis=1)  # expected tokens per step
    by_position = np.ascontiguousarray(reach.T)  # by_position[k] = P_k of every request: 1-D gathers
    remaining = target_tokens.astype(np.int64).copy()
    active = np.arange(len(reach))
    reqs, accs = [], []
    while active.size:
        m = remaining[active] / mu[active]
        n = np.minimum(np.ceil(m + np.sqrt(m) + 2), remaining[active]).astype(
            np.int64
        )  # ~1 SD extra; rest next round
        idx = np.repeat(active, n)
        u = rng.random(idx.size)
        acc = np.zeros(idx.size, dtype=np.int64)
        for k in range(1, max_k + 1):  # accepted = #{k : u < P_k}; loop over positions, not steps
            acc += u < by_position[k][idx]
        reqs.append(idx)
        accs.append(acc)
        remaining -= np.bincount(idx, weights=acc + 1, minlength=len(reach)).astype(np.int64)
        active = active[remaining[active] > 0]
    req = np.concatenate(reqs) if reqs else np.zeros(0, np.int64)
    acc = np.concatenate(accs) if accs else np.zeros(0, np.int64)
    order = np.argsort(req, kind="stable")  # rounds stay in order within a request
    req, acc = req[order], acc[order]
    emitted_before = _cumsum_within(acc + 1, req) - (acc + 1)
    keep = emitted_before < target_tokens[req]
    return req[keep], acc[keep]


def _cumsum_within(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum restarting at each group (groups contiguous and sorted)."""
    total = np.cumsum(values)
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]]) if len(group) else np.zeros(0, np.int64)
    base = np.repeat(total[starts] - values[starts], np.diff(np.r_[starts, len(group)]))
    return total - base


def generate_block(
    fleet: Fleet, t: np.ndarray, first_index: int, rng: np.random.Generator, mix: Mix, pool: PromptPool
) -> Block:
    """Requests arriving at times t (sorted epoch seconds), numbered from first_index."""
    n = len(t)
    deps = fleet.deployments
    dep, task, temperature = mix.sample(rng, n)
    p = resolve(fleet, dep, task, temperature, t)
    tau = np.where(rng.random(n) < fleet.control_share, 0, p.tau)
    h = 2.0 * rng.beta(p.difficulty, p.difficulty)
    mean_out = np.array([TASK_DEFAULTS[x]["output_tokens"] for x in TASKS])[task]
    target = np.maximum(1, np.rint(mean_out * _noise(rng, n, OUTPUT_SIGMA))).astype(np.int64)
    load = load_factor(fleet, t)
    typical_batch = np.array([d.batch_size for d in deps])[dep] * p.batch_scale
    batch = np.maximum(1, np.rint(typical_batch * load * _noise(rng, n, BATCH_SIGMA))).astype(np.int64)
    prompt = pool.sample(rng, task)
    prompt_tokens = pool.tokens[prompt]

    req, acc = draw_steps(rng, reach_probs(p.a1, p.decay, h, tau), target)
    s = len(req)
    floor = np.array([d.floor_ms for d in deps])[dep] * p.verify_scale
    compute = np.array([d.compute_ms for d in deps])[dep] * p.verify_scale
    per_token = np.array([d.draft_ms_per_token for d in deps])[dep]
    drafted = tau[req]
    draft_ms = np.round(drafted * per_token[req] * _noise(rng, s), 3)
    verify_ms = np.round((floor[req] + compute[req] * (drafted + 1) * batch[req]) * _noise(rng, s), 3)
    step_ms = draft_ms + verify_ms
    step = _cumsum_within(np.ones(s, np.int64), req) - 1

    queue = rng.exponential(QUEUE_MS * load**2)
    prefill = (floor + compute * prompt_tokens) * _noise(rng, n)
    head = queue + prefill
    step_end = t[req] + (head[req] + _cumsum_within(step_ms, req)) / 1000.0
    total_ms = np.bincount(req, weights=step_ms, minlength=n)
    first_ms = np.zeros(n)
    first_ms[req[step == 0]] = step_ms[step == 0]

    q_mean = np.clip(
        np.array([TASK_DEFAULTS[x]["quality"] for x in TASKS])[task] - p.quality_drop, 0.01, 0.99
    )
    quality = rng.beta(q_mean * QUALITY_CONCENTRATION, (1 - q_mean) * QUALITY_CONCENTRATION)
    sampled = rng.random(n) < fleet.shadow_share
    match = rng.random(n) < p.shadow_match_rate
    shadow = np.where(sampled, match.astype(np.int64), -1)

    return Block(
        index=first_index + np.arange(n),
        ts=t,
        dep=dep,
        task=task,
        params=p,
        tau=tau,
        prompt=prompt,
        prompt_tokens=prompt_tokens,
        output_tokens=np.bincount(req, weights=acc + 1, minlength=n).astype(np.int64),
        batch_size=batch,
        latency_ms=np.round(head + total_ms, 3),
        ttft_ms=np.round(head + first_ms, 3),
        quality=np.round(quality, 4),
        shadow=shadow,
        step_req=req,
        step=step,
        drafted=drafted,
        accepted=acc,
        draft_ms=draft_ms,
        verify_ms=verify_ms,
        step_end=step_end,
    )
