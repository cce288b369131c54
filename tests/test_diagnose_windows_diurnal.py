"""Engine windows carry no task: a mix of tasks that follows the day (code by day, chat by night) and the week must
not read as an acceptance_regression, and a real drop must still be found (acceptance compared within like hours)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from specdiag.diagnose import diagnose
from specdiag.ingest import ingest_paths
from specdiag.store import connect

TAU = 4
TASKS = {"code": 0.80, "chat": 0.62}  # first-position acceptance; decay 0.9 per position


def _scrapes(path: Path, seed: int, start: datetime, days: float, drop_at: float | None = None) -> None:
    """vLLM V1 Prometheus counters every 5 minutes: 90% code at 14:00, 10% at 02:00, nights at 10% of the volume,
    the weekend mostly chat; ``drop_at`` (days): first-position acceptance of every task down 0.05 from then on."""
    rng = np.random.default_rng(seed)
    total = np.zeros(3 + TAU)
    lines = []
    for k in range(int(days * 288)):
        mid = start + timedelta(minutes=5 * k + 2.5)
        day = 0.5 * (1 + np.cos(2 * np.pi * (mid.hour + mid.minute / 60 - 14) / 24))
        code = 0.25 if mid.weekday() >= 5 else 0.1 + 0.8 * day
        steps = rng.poisson(20_000 * (0.1 + 0.9 * day))
        for task, share in (("code", code), ("chat", 1 - code)):
            a1 = TASKS[task] - (
                0.05 if drop_at is not None and mid >= start + timedelta(days=drop_at) else 0.0
            )
            reach = np.cumprod(a1 * 0.9 ** np.arange(TAU))  # P(accepted >= i), i = 1..tau
            p = np.concatenate([[1.0], reach]) - np.concatenate([reach, [0.0]])
            s = rng.binomial(steps, share)
            hist = rng.multinomial(s, p)
            reached = np.cumsum(hist[::-1])[::-1][1:]
            total += [s, s * TAU, reached.sum(), *reached]
        ms = int((start + timedelta(minutes=5 * (k + 1))).timestamp() * 1000)
        lab = 'model_name="dep",engine="0",instance="a:8000"'
        for i, name in enumerate(("drafts", "draft_tokens", "accepted_tokens")):
            lines.append(f"vllm:spec_decode_num_{name}_total{{{lab}}} {total[i]} {ms}")
        for pos in range(TAU):
            lines.append(
                f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{{lab},position="{pos}"}} {total[3 + pos]} {ms}'
            )
    path.write_text("\n".join(lines) + "\n")


def _regressions(tmp_path: Path, **kw: object) -> list:
    prom = tmp_path / "scrape.prom"
    _scrapes(prom, **kw)  # type: ignore[arg-type]
    ingest_paths([prom], db=tmp_path / "s.duckdb", progress=False)
    con = connect(tmp_path / "s.duckdb")
    try:
        return [f for f in diagnose(con) if f.kind == "acceptance_regression"]
    finally:
        con.close()


# Wednesday 13:00 to Tuesday 03:00: starts and ends mid-day, a weekend inside
START = datetime(2026, 3, 4, 13, tzinfo=UTC)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_daily_and_weekly_mix_of_tasks_is_no_regression(tmp_path: Path, seed: int) -> None:
    assert _regressions(tmp_path, seed=seed, start=START, days=5.6) == []


def test_a_drop_under_a_daily_mix_is_still_found(tmp_path: Path) -> None:
    found = _regressions(tmp_path, seed=0, start=START, days=5.6, drop_at=1.5)  # Friday 01:00
    assert len(found) == 1
    assert found[0].since == datetime(2026, 3, 6, 1)
