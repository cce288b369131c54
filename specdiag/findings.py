"""The finding vocabulary shared by diagnose, explain, flag and report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

KINDS: dict[str, str] = {
    "acceptance_regression": "acceptance dropped in a segment",
    "fast_but_wrong": "acceptance or speed went up while the output drifted from what the target alone would write",
    "speculation_harmful": "per-token latency with speculation is no better than without it",
    "verify_bound": "verification cost grows with tokens verified x batch size and dominates at the observed batch",
    "draft_bottleneck": "the draft takes too large a share of each step, or c is too high for the observed alpha",
    "tau_too_high": "a smaller tau gives a materially higher speedup",
    "tau_too_low": "a larger tau gives a materially higher speedup",
}
SEVERITIES = ("high", "medium", "low")


@dataclass
class Finding:
    kind: str
    deployment: str | None
    segment: dict[str, Any]
    severity: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    since: datetime | None = None
    finding_id: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown finding kind {self.kind!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
