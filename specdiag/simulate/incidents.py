"""The true parameters of each request: its deployment's settings, changed by the incidents in effect.

One vectorised code path serves both the generator (one row per request) and the ground truth (one row per
deployment x task x temperature x period), so the truth cannot drift from what is generated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specdiag.simulate.config import TASK_DEFAULTS, Fleet, Incident, bump_version

TASKS = tuple(TASK_DEFAULTS)


@dataclass
class Params:
    """Per-row true parameters (arrays of one length). Model ids and the acceptance rule are strings."""

    tau: np.ndarray  # int: draft tokens per verify step
    temperature: np.ndarray
    a1: np.ndarray  # first-position conditional acceptance, after temperature and incidents
    decay: np.ndarray
    difficulty: np.ndarray  # Beta concentration k of the per-request multiplier
    batch_scale: np.ndarray  # x deployment's typical batch
    verify_scale: np.ndarray  # x target forward costs (floor and compute)
    quality_drop: np.ndarray
    shadow_match_rate: np.ndarray
    target_model: np.ndarray  # object arrays of str
    draft_model: np.ndarray
    acceptance: np.ndarray


def new_model(inc: Incident, field: str, current: str) -> str:
    """The model id an incident switches to: as configured, else a plausible one derived from the current id."""
    explicit = inc.params.get(field)
    if explicit:
        return str(explicit)
    if field == "draft_model":
        return bump_version(current)
    family = current.split("@")[0].split("-")[0]
    return f"{family}-8b@v1"


def resolve(
    fleet: Fleet, dep: np.ndarray, task: np.ndarray, temperature: np.ndarray, t: np.ndarray
) -> Params:
    """True parameters of rows (deployment index, task index, sampled temperature, time in epoch seconds)."""
    deps = fleet.deployments
    n = len(dep)

    def per_dep(values: list[object], dtype: object = float) -> np.ndarray:
        return np.asarray(values, dtype=dtype)[dep]  # type: ignore[call-overload]

    alpha_table = np.array([[d.task_alpha1(name) for name in TASKS] for d in deps])
    p = Params(
        tau=per_dep([d.tau for d in deps], int),
        temperature=np.asarray(temperature, dtype=float).copy(),
        a1=alpha_table[dep, task],
        decay=per_dep([d.decay for d in deps]),
        difficulty=per_dep([d.difficulty for d in deps]),
        batch_scale=np.ones(n),
        verify_scale=np.ones(n),
        quality_drop=np.zeros(n),
        shadow_match_rate=per_dep([d.shadow_match_rate for d in deps]),
        target_model=per_dep([d.target_model for d in deps], object),
        draft_model=per_dep([d.draft_model for d in deps], object),
        acceptance=per_dep([d.acceptance for d in deps], object),
    )
    a1_scale, a1_delta = np.ones(n), np.zeros(n)
    for inc in sorted(fleet.incidents, key=lambda i: i.start):
        d = [x.name for x in deps].index(inc.deployment)
        live = (dep == d) & (t >= inc.start.timestamp())  # the whole deployment, from the start
        scope_task = inc.task or ("translate" if inc.kind == "tokenizer_mismatch" else None)
        hit = live if scope_task is None else live & (task == TASKS.index(scope_task))
        current_draft, current_target = (
            _current(p.draft_model, live, deps[d].draft_model),
            _current(p.target_model, live, deps[d].target_model),
        )
        if inc.kind == "draft_rollout":
            p.draft_model[live] = new_model(inc, "draft_model", current_draft)
            a1_delta[hit] -= float(inc.param("acceptance_drop"))
        elif inc.kind == "tokenizer_mismatch":
            p.draft_model[live] = new_model(inc, "draft_model", current_draft)
            a1_scale[hit] *= float(inc.param("acceptance_scale"))
        elif inc.kind in ("lossy_acceptance", "small_verifier"):
            if inc.kind == "lossy_acceptance":
                p.acceptance[hit] = str(inc.params.get("acceptance", "typical"))
            else:
                p.target_model[hit] = new_model(inc, "target_model", current_target)
                p.verify_scale[hit] *= float(inc.param("verify_scale"))
            a1_delta[hit] += float(inc.param("acceptance_gain"))
            p.quality_drop[hit] += float(inc.param("quality_drop"))
            p.shadow_match_rate[hit] = float(inc.param("shadow_match_rate"))
        elif inc.kind == "batch_surge":
            p.batch_scale[hit] *= float(inc.param("batch_scale"))
        elif inc.kind == "tau_misconfig":
            p.tau[hit] = int(inc.param("tau"))
        elif inc.kind == "temperature_change":
            p.temperature[hit] = float(inc.param("temperature"))
    slope = per_dep([d.temperature_slope for d in deps])
    # a_1 at temperature T: sampling at higher temperature spreads the target's mass, so fewer draft tokens match.
    p.a1 = np.clip(p.a1 * np.clip(1.0 - slope * p.temperature, 0.0, 1.0) * a1_scale + a1_delta, 0.0, 1.0)
    return p


def _current(values: np.ndarray, mask: np.ndarray, default: str) -> str:
    """The value in effect for the masked rows (all equal within one deployment), else the configured one."""
    return str(values[mask][0]) if mask.any() else default
