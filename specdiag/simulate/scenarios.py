"""Named scenarios: a small healthy fleet, plus incidents switched on at fixed fractions of the time range."""

from __future__ import annotations

from datetime import datetime, timedelta

from specdiag.errors import UsageError
from specdiag.simulate.config import Deployment, Fleet, Incident, bump_version

SCENARIOS = ("healthy", "regression", "fast-but-wrong", "bottleneck", "mixed")


def healthy_deployments() -> list[Deployment]:
    """Three deployments with different pairs, tau, task mixes and batch sizes (costs in ms)."""
    return [
        Deployment(
            name="chat-prod",
            target_model="llama-70b@v3",
            draft_model="llama-1b-draft@v7",
            tau=4,
            share=0.5,
            batch_size=16,
            floor_ms=24.0,
            compute_ms=0.06,
            draft_ms_per_token=1.8,
            tasks={"chat": 0.55, "summarize": 0.25, "translate": 0.20},
        ),
        Deployment(
            name="code-assist",
            target_model="qwen-32b@v2",
            draft_model="qwen-0.5b-draft@v4",
            tau=6,
            share=0.3,
            batch_size=8,
            floor_ms=14.0,
            compute_ms=0.05,
            draft_ms_per_token=0.9,
            tasks={"code": 0.8, "chat": 0.2},
            temperatures=[0.0, 0.2],
            temperature_shares=[0.7, 0.3],
            decay=0.98,
        ),
        Deployment(
            name="batch-api",
            target_model="llama-70b@v3",
            draft_model="eagle3:llama-70b@v2",
            tau=3,
            share=0.2,
            batch_size=48,
            floor_ms=24.0,
            compute_ms=0.06,
            draft_ms_per_token=0.7,
            tasks={"summarize": 0.6, "translate": 0.4},
            temperatures=[0.0],
            temperature_shares=[1.0],
            decay=0.93,
        ),
    ]


def scenario(name: str) -> Fleet:
    """The fleet of a named scenario; incident starts are fractions of the default 7-day range."""
    if name not in SCENARIOS:
        raise UsageError(f"unknown scenario {name!r}", hint=f"one of {', '.join(SCENARIOS)}")
    fleet = Fleet(deployments=healthy_deployments())
    chat, code, batch = fleet.deployments

    def at(fraction: float) -> datetime:
        return fleet.start + timedelta(days=fleet.days * fraction)

    incidents: list[Incident] = []
    if name in ("regression", "mixed"):
        incidents.append(
            Incident(
                "draft_rollout",
                chat.name,
                at(0.55),
                "chat",
                {"draft_model": bump_version(chat.draft_model)},
            )
        )
    if name in ("fast-but-wrong", "mixed"):
        incidents.append(Incident("lossy_acceptance", code.name, at(0.5), None, {"acceptance": "typical"}))
    if name in ("bottleneck", "mixed"):
        incidents.append(Incident("batch_surge", batch.name, at(0.4)))
        incidents.append(Incident("tau_misconfig", chat.name, at(0.3), None, {"tau": 12}))
    if name == "mixed":
        incidents.append(Incident("temperature_change", code.name, at(0.7), "chat", {"temperature": 1.0}))
        incidents.append(
            Incident(
                "tokenizer_mismatch",
                batch.name,
                at(0.75),
                "translate",
                {"draft_model": bump_version(batch.draft_model)},
            )
        )
    fleet.incidents = incidents
    return fleet
