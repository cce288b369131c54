"""Fleet configuration: deployments, incidents and the time range, from a named scenario or a TOML file.

Every number here is a *true* parameter of the simulated fleet; the ground truth JSON is derived from them.
Units: ms for times, tokens for lengths, probabilities in [0, 1].
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from specdiag.errors import InputError
from specdiag.speedup import CostModel

# Per task: first-position acceptance a_1 of a well-matched draft at temperature 0, mean output length (tokens),
# mean quality score. Code is predictable (high a_1), translation into another script the least.
TASK_DEFAULTS: dict[str, dict[str, float]] = {
    "code": {"alpha1": 0.88, "output_tokens": 220.0, "quality": 0.86},
    "chat": {"alpha1": 0.76, "output_tokens": 260.0, "quality": 0.84},
    "summarize": {"alpha1": 0.82, "output_tokens": 150.0, "quality": 0.88},
    "translate": {"alpha1": 0.70, "output_tokens": 120.0, "quality": 0.85},
}

INCIDENT_KINDS = (
    "draft_rollout",  # new draft version; acceptance on the scoped task drops by acceptance_drop
    "lossy_acceptance",  # typical acceptance: acceptance up, quality and shadow matches down ("fast but wrong")
    "small_verifier",  # target replaced by a small checkpoint: verify cheaper, acceptance up, quality down
    "batch_surge",  # running batch x batch_scale: verification becomes compute-bound
    "tau_misconfig",  # tau set far from its optimum
    "temperature_change",  # sampling temperature changed
    "tokenizer_mismatch",  # new draft whose tokenizer splits non-English text differently: acceptance collapses
)

# Incidents that change the serving setup itself (tau, batch, the verifier): they take no task scope.
DEPLOYMENT_WIDE = ("small_verifier", "batch_surge", "tau_misconfig")

# Default effect sizes per incident kind (overridable per incident in the config).
INCIDENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "draft_rollout": {"acceptance_drop": 0.15},
    "lossy_acceptance": {"acceptance_gain": 0.08, "quality_drop": 0.15, "shadow_match_rate": 0.55},
    "small_verifier": {
        "verify_scale": 0.35,
        "acceptance_gain": 0.06,
        "quality_drop": 0.20,
        "shadow_match_rate": 0.30,
    },
    "batch_surge": {"batch_scale": 4.0},
    "tau_misconfig": {"tau": 12},
    "temperature_change": {"temperature": 1.0},
    "tokenizer_mismatch": {"acceptance_scale": 0.2},
}


@dataclass
class Deployment:
    name: str
    target_model: str
    draft_model: str
    tau: int
    share: float  # share of fleet requests
    batch_size: float  # typical running batch at mean load
    floor_ms: float  # CostModel: t(n, B) = floor_ms + compute_ms * n * B
    compute_ms: float
    draft_ms_per_token: float
    tasks: dict[str, float]  # task -> share of this deployment's requests
    temperatures: list[float] = field(default_factory=lambda: [0.0, 0.7])
    temperature_shares: list[float] = field(default_factory=lambda: [0.5, 0.5])
    alpha1: dict[str, float] = field(default_factory=dict)  # task -> a_1 override
    decay: float = 0.96  # a_i = a_1 * decay^(i-1)
    # per-request multiplier h = 2 * Beta(k, k), k = difficulty (mean 1, SD 2 sqrt(0.25 / (2k + 1))): k = 35 gives
    # SD(h) = 0.12, the 10-15% relative spread of per-prompt acceptance within one task (docs/simulator.md)
    difficulty: float = 35.0
    temperature_slope: float = 0.15  # a_1(T) = a_1(0) * (1 - slope * T)
    shadow_match_rate: float = 0.98  # P(output identical to target-only decoding) when lossless
    acceptance: str = "rejection"  # acceptance rule as logged

    @property
    def cost(self) -> CostModel:
        return CostModel(self.floor_ms, self.compute_ms, self.draft_ms_per_token)

    def task_alpha1(self, task: str) -> float:
        return self.alpha1.get(task, TASK_DEFAULTS[task]["alpha1"])


@dataclass
class Incident:
    kind: str
    deployment: str
    start: datetime
    task: str | None = None  # None: every task of the deployment
    params: dict[str, Any] = field(default_factory=dict)

    def param(self, name: str) -> Any:
        return self.params.get(name, INCIDENT_DEFAULTS[self.kind].get(name))


@dataclass
class Fleet:
    deployments: list[Deployment]
    incidents: list[Incident] = field(default_factory=list)
    start: datetime = datetime(2026, 11, 16, tzinfo=UTC)
    days: float = 7.0
    requests: int = 20_000
    control_share: float = 0.05  # share of tau = 0 control requests
    shadow_share: float = 0.05  # share of requests with a shadow (target-only) comparison
    daily_amplitude: float = 0.5  # load(t) = 1 + A * cos(2 pi (hour - peak_hour) / 24)
    peak_hour: float = 15.0  # UTC

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)

    def deployment(self, name: str) -> Deployment:
        for d in self.deployments:
            if d.name == name:
                return d
        raise KeyError(name)


def bump_version(model: str) -> str:
    """`llama-1b-draft@v7` -> `llama-1b-draft@v8` (a new draft rollout); `m` -> `m@v2`."""
    name, _, version = model.partition("@")
    if version.startswith("v") and version[1:].isdigit():
        return f"{name}@v{int(version[1:]) + 1}"
    return f"{name}@v2"


# ---------------------------------------------------------------------------------------------- TOML loading


def _time(value: Any, where: str, fleet_start: datetime | None = None) -> datetime:
    """A TOML datetime, an RFC 3339 string, or (for incidents) a number of days after the fleet start."""
    if isinstance(value, int | float) and not isinstance(value, bool) and fleet_start is not None:
        return fleet_start + timedelta(days=float(value))
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise InputError(f"{where}: bad timestamp {value!r}") from exc
    if not isinstance(value, datetime):
        raise InputError(f"{where}: expected a timestamp, got {value!r}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise InputError(
            f"{where}: unknown key {unknown[0]!r}", hint=f"allowed: {', '.join(sorted(allowed))}"
        )


def _build(cls: type, table: dict[str, Any], where: str) -> Any:
    names = {f.name for f in fields(cls)}
    _check_keys(table, names, where)
    try:
        return cls(**table)
    except TypeError as exc:
        raise InputError(f"{where}: {exc}") from exc


def load_config(path: str | os.PathLike[str]) -> Fleet:
    """Read a fleet from TOML (see examples/fleet.toml); every error names the file and the table."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: invalid TOML: {exc}") from exc
    return fleet_from_dict(data, str(path))


def fleet_from_dict(data: dict[str, Any], source: str = "config") -> Fleet:
    _check_keys(data, {"fleet", "deployments", "incidents"}, source)
    table = dict(data.get("fleet", {}))
    if "start" in table:
        table["start"] = _time(table["start"], f"{source} [fleet] start")
    deployments = [
        _build(Deployment, dict(d), f"{source} [[deployments]] #{i + 1}")
        for i, d in enumerate(data.get("deployments", []))
    ]
    fleet: Fleet = _build(Fleet, {**table, "deployments": deployments}, f"{source} [fleet]")
    for i, raw in enumerate(data.get("incidents", [])):
        where = f"{source} [[incidents]] #{i + 1}"
        raw = dict(raw)
        kind = raw.pop("kind", None)
        if kind not in INCIDENT_KINDS:
            raise InputError(f"{where}: kind {kind!r} is not one of {', '.join(INCIDENT_KINDS)}")
        if "deployment" not in raw or "start" not in raw:
            raise InputError(f"{where}: missing 'deployment' or 'start'")
        deployment, start, task = raw.pop("deployment"), raw.pop("start"), raw.pop("task", None)
        _check_keys(raw, set(INCIDENT_DEFAULTS[kind]) | {"draft_model", "target_model", "acceptance"}, where)
        fleet.incidents.append(Incident(kind, deployment, _time(start, where, fleet.start), task, raw))
    validate(fleet, source)
    return fleet


def validate(fleet: Fleet, source: str = "config") -> None:
    """Reject values the model cannot simulate, with one line naming the offending entry."""
    if not fleet.deployments:
        raise InputError(f"{source}: no [[deployments]]")
    if fleet.days <= 0 or fleet.requests < 0:
        raise InputError(f"{source} [fleet]: days must be > 0 and requests >= 0")
    for name, value in (("control_share", fleet.control_share), ("shadow_share", fleet.shadow_share)):
        if not 0.0 <= value <= 1.0:
            raise InputError(f"{source} [fleet]: {name} must be in [0, 1]")
    if not 0.0 <= fleet.daily_amplitude < 1.0:
        raise InputError(f"{source} [fleet]: daily_amplitude must be in [0, 1)")
    seen: set[str] = set()
    for d in fleet.deployments:
        where = f"{source} deployment {d.name!r}"
        if d.name in seen:
            raise InputError(f"{where}: duplicate name")
        seen.add(d.name)
        if isinstance(d.tau, bool) or not isinstance(d.tau, int) or not 0 <= d.tau <= 16:
            raise InputError(f"{where}: tau must be an integer in 0..16")
        if d.share <= 0 or d.batch_size < 1 or min(d.floor_ms, d.compute_ms, d.draft_ms_per_token) < 0:
            raise InputError(f"{where}: share > 0, batch_size >= 1 and non-negative costs required")
        if not d.tasks or any(t not in TASK_DEFAULTS for t in d.tasks) or min(d.tasks.values()) < 0:
            raise InputError(f"{where}: tasks must be a table of shares over {', '.join(TASK_DEFAULTS)}")
        if len(d.temperatures) != len(d.temperature_shares) or not d.temperatures:
            raise InputError(f"{where}: temperatures and temperature_shares must have the same length")
        if min(d.temperatures) < 0 or min(d.temperature_shares) < 0:
            raise InputError(f"{where}: temperatures and shares must be >= 0")
        if not (0 < d.decay <= 1 and d.difficulty > 0 and 0 <= d.shadow_match_rate <= 1):
            raise InputError(f"{where}: need 0 < decay <= 1, difficulty > 0, shadow_match_rate in [0, 1]")
        if any(not 0 <= a <= 1 for a in d.alpha1.values()) or any(t not in TASK_DEFAULTS for t in d.alpha1):
            raise InputError(f"{where}: alpha1 must map known tasks to probabilities")
    for inc in fleet.incidents:
        where = f"{source} incident {inc.kind} on {inc.deployment!r}"
        if inc.deployment not in seen:
            raise InputError(f"{where}: unknown deployment")
        if inc.task is not None and inc.task not in TASK_DEFAULTS:
            raise InputError(f"{where}: unknown task {inc.task!r}")
        if inc.kind in DEPLOYMENT_WIDE and inc.task is not None:
            raise InputError(f"{where}: this incident applies to the whole deployment; remove 'task'")
        for name in INCIDENT_DEFAULTS[inc.kind]:
            value = inc.param(name)
            if name == "tau":
                ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 16
                rule = "an integer in 0..16"
            elif isinstance(value, bool) or not isinstance(value, int | float) or value != value:
                ok, rule = False, "a number"
            elif name in ("acceptance_drop", "acceptance_gain", "quality_drop", "shadow_match_rate"):
                ok, rule = 0.0 <= value <= 1.0, "in [0, 1]"
            elif name in ("batch_scale", "verify_scale"):
                ok, rule = 0.0 < value < float("inf"), "> 0"
            else:  # temperature, acceptance_scale
                ok, rule = 0.0 <= value < float("inf"), ">= 0"
            if not ok:
                raise InputError(f"{where}: {name} must be {rule}, got {value!r}")
