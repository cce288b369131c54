"""Ground truth of a simulated fleet: incidents, and per deployment and period the true acceptance by position,
cost model, speedup curve over tau = 0..16 and best tau (what a recommendation is scored against).

Periods split a deployment's time range at the starts of its incidents. Within a period every request of one
(task, temperature) segment has the same parameters, so its pooled acceptance follows from the model in
`acceptance.py`; a deployment's period mixes its segments weighted by their expected verify steps (request share x
E[steps per request]). Control traffic (tau = 0) is excluded: it has no drafts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

from specdiag.simulate.acceptance import MAX_POSITIONS, conditional_from_reach, step_weighted_reach
from specdiag.simulate.config import INCIDENT_DEFAULTS, TASK_DEFAULTS, Deployment, Fleet
from specdiag.simulate.incidents import TASKS, Params, resolve
from specdiag.speedup import CostModel, best_tau, speedup

MAX_TAU = 16


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _segments(fleet: Fleet, e: int, t: float) -> tuple[list[tuple[str, float, float]], Params]:
    """(task, temperature, request share) of deployment e's segments and their parameters at time t."""
    d = fleet.deployments[e]
    rows = [
        (task, temp, share * tshare)
        for task, share in d.tasks.items()
        if share > 0
        for temp, tshare in zip(d.temperatures, d.temperature_shares, strict=True)
        if tshare > 0
    ]
    total = sum(r[2] for r in rows)
    rows = [(task, temp, w / total) for task, temp, w in rows]
    n = len(rows)
    params = resolve(
        fleet,
        np.full(n, e),
        np.array([TASKS.index(r[0]) for r in rows]),
        np.array([r[1] for r in rows]),
        np.full(n, t),
    )
    return rows, params


def _pooled(rows: list[tuple[str, float, float]], p: Params) -> tuple[np.ndarray, list[np.ndarray]]:
    """Pooled reach probabilities P_k over the segments, shape (17 taus, 17 positions), and each segment's own."""
    mixed = np.zeros((MAX_TAU + 1, MAX_POSITIONS + 1))
    mass = np.zeros(MAX_TAU + 1)
    own = []
    for i, (task, _temp, share) in enumerate(rows):
        reach, steps = step_weighted_reach(
            float(p.a1[i]), float(p.decay[i]), float(p.difficulty[i]), TASK_DEFAULTS[task]["output_tokens"]
        )
        own.append(reach / steps[:, None])
        mixed += share * reach
        mass += share * steps
    return mixed / mass[:, None], own


def _acceptance(reach: np.ndarray, tau: int) -> dict[str, Any]:
    mal = float(reach[: tau + 1].sum())
    return {
        "alpha_by_position": conditional_from_reach(reach).tolist(),
        "mean_acceptance_length": mal,
        "acceptance_rate": (mal - 1.0) / tau if tau else None,
    }


def _period(fleet: Fleet, e: int, start: datetime, end: datetime) -> dict[str, Any]:
    d: Deployment = fleet.deployments[e]
    rows, p = _segments(fleet, e, start.timestamp())
    tau = int(p.tau[0])  # tau, batch and costs are deployment-wide (incidents that change them have no task)
    batch = d.batch_size * float(p.batch_scale[0])
    scale = float(p.verify_scale[0])
    cost = CostModel(d.floor_ms * scale, d.compute_ms * scale, d.draft_ms_per_token)
    reach, own = _pooled(rows, p)
    curve = [
        {
            "tau": t,
            "expected_tokens_per_step": float(reach[t, : t + 1].sum()),
            "speedup": speedup(conditional_from_reach(reach[t]), t, cost, batch),
        }
        for t in range(MAX_TAU + 1)
    ]
    at = max(tau, 1)  # acceptance as measured at the deployed tau
    segments = [
        {
            "task": task,
            "temperature": float(p.temperature[i]),
            "request_share": share,
            "target_model": str(p.target_model[i]),
            "draft_model": str(p.draft_model[i]),
            "acceptance": str(p.acceptance[i]),
            "alpha1": float(p.a1[i]),
            "decay": float(p.decay[i]),
            "difficulty": float(p.difficulty[i]),
            # as the generator draws it: the Beta mean is clipped to [0.01, 0.99] (generate.py)
            "quality_mean": float(
                np.clip(TASK_DEFAULTS[task]["quality"] - float(p.quality_drop[i]), 0.01, 0.99)
            ),
            "shadow_match_rate": float(p.shadow_match_rate[i]),
            **_acceptance(own[i][at], tau),
        }
        for i, (task, _temp, share) in enumerate(rows)
    ]
    segments = _merge_segments(segments)
    return {
        "start": _iso(start),
        "end": _iso(end),
        "tau": tau,
        "typical_batch_size": batch,
        "cost_model": cost.to_dict(),
        "cost_ratio": cost.cost_ratio(batch),
        **_acceptance(reach[at], tau),
        "speedup_curve": curve,
        "best_tau": best_tau(curve),
        "segments": segments,
    }


def _merge_segments(segments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One segment per (task, temperature): an incident that sets the temperature (temperature_change) maps several
    configured temperatures onto one; their rows then have identical parameters, so only the shares add up."""
    merged: dict[tuple[str, float], dict[str, Any]] = {}
    for seg in segments:
        key = (seg["task"], seg["temperature"])
        if key in merged:
            merged[key]["request_share"] += seg["request_share"]
        else:
            merged[key] = dict(seg)
    return list(merged.values())


def ground_truth(fleet: Fleet) -> dict[str, Any]:
    """Everything the simulator knows: incidents, and per deployment its periods (see module doc). The top-level
    fields of a deployment repeat its first period (the state before any incident)."""
    deployments = []
    for e, d in enumerate(fleet.deployments):
        cuts = sorted(
            {i.start for i in fleet.incidents if i.deployment == d.name and fleet.start < i.start < fleet.end}
        )
        bounds = [fleet.start, *cuts, fleet.end]
        periods = [_period(fleet, e, a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        first = {k: v for k, v in periods[0].items() if k not in ("start", "end", "segments")}
        deployments.append(
            {
                "name": d.name,
                "engine": e,
                "target_model": d.target_model,
                "draft_model": d.draft_model,
                "request_share": d.share / sum(x.share for x in fleet.deployments),
                "tasks": d.tasks,
                "temperatures": dict(zip(map(str, d.temperatures), d.temperature_shares, strict=True)),
                **first,
                "periods": periods,
            }
        )
    incidents = [
        {
            "kind": i.kind,
            "deployment": i.deployment,
            "task": i.task or ("translate" if i.kind == "tokenizer_mismatch" else None),
            "start": _iso(i.start),
            "in_range": fleet.start <= i.start < fleet.end,
            "params": {**INCIDENT_DEFAULTS[i.kind], **i.params},
        }
        for i in sorted(fleet.incidents, key=lambda i: i.start)
    ]
    return {
        "start": _iso(fleet.start),
        "end": _iso(fleet.end),
        "days": fleet.days,
        "control_share": fleet.control_share,
        "shadow_share": fleet.shadow_share,
        "incidents": incidents,
        "deployments": deployments,
    }
