"""diagnose on deployments known only from engine metrics: acceptance regressions found in the windows' counts."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from specdiag.diagnose import diagnose, flag, save_findings
from specdiag.errors import InputError
from specdiag.ingest import ingest_paths
from specdiag.simulate import simulate
from specdiag.store import connect

SIM: dict[str, Any] = {"requests": 6000, "days": 3.0, "seed": 1}


def _store(root: Path, name: str, scenario: str, *formats: str) -> tuple[Path, dict[str, Any]]:
    db = root / f"{name}.duckdb"
    truth: dict[str, Any] = {}
    for fmt in formats:
        out = root / f"{name}.{fmt}"
        truth = simulate(out, scenario=scenario, fmt=fmt, **SIM)
        ingest_paths([out], db=db, progress=False)
    return db, truth


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("windows")


def _findings(db: Path) -> list[Any]:
    con = connect(db)
    try:
        return save_findings(con, diagnose(con))
    finally:
        con.close()


@pytest.mark.parametrize("fmt", ["prometheus", "vllm"])
def test_a_drop_in_engine_metrics_is_an_acceptance_regression(root: Path, fmt: str) -> None:
    db, truth = _store(root, f"regression-{fmt}", "regression", fmt)
    (incident,) = truth["incidents"]
    start = datetime.fromisoformat(incident["start"].replace("Z", "+00:00")).replace(tzinfo=None)
    (f,) = _findings(db)
    assert f.kind == "acceptance_regression" and f.segment == {}
    # Prometheus names the model (the simulated deployment); a vLLM log is one deployment named after its file,
    # with the simulated deployments told apart by their tau
    assert f.deployment == (incident["deployment"] if fmt == "prometheus" else f"regression-{fmt}")
    assert f.evidence["tau"] == 4  # chat-prod's
    assert f.evidence["source"].startswith("prometheus/" if fmt == "prometheus" else "vllm-")
    assert f.evidence["unit"] == "5-minute bucket of engine windows"
    assert f.evidence["after"] < f.evidence["before"] - 0.05
    # the split is the first whole hour after the rollout began (the hour holding it is mixed)
    assert abs((f.since - start).total_seconds()) <= 3600
    assert "engine metrics" in f.summary
    if fmt == "prometheus":  # scrapes carry no generation throughput: no lost tokens/s to state
        assert f.evidence["lost_tokens_per_s"] is None
    else:
        assert f.evidence["lost_tokens_per_s"] > 0


@pytest.mark.parametrize("fmt", ["prometheus", "vllm"])
def test_healthy_engine_metrics_have_no_findings(root: Path, fmt: str) -> None:
    db, _ = _store(root, f"healthy-{fmt}", "healthy", fmt)
    assert _findings(db) == []


def test_deployments_with_requests_are_diagnosed_from_their_requests_only(root: Path) -> None:
    """The same fleet as a trace and as Prometheus scrapes: one finding, from the requests (more specific)."""
    db, _ = _store(root, "both", "regression", "trace", "prometheus")
    (f,) = _findings(db)
    assert "source" not in f.evidence and f.segment == {"task": "chat"}


def test_a_deployment_logged_twice_is_read_from_one_source(root: Path) -> None:
    """Windows of two sources for one deployment (a log and its scrapes) would count each token twice."""
    db = root / "twice.duckdb"
    con = connect(db)
    rows = []
    for source, scale in (("vllm-v1-log/2025-09", 1), ("prometheus/vllm-v1", 2)):
        for minute in range(0, 60 * (3 if scale == 1 else 1), 5):
            rows.append(
                (source, "svc", datetime(2026, 1, 1, minute // 60, minute % 60), 4, 100 * scale, 50 * scale)
            )
    con.executemany(
        "insert into windows (source, deployment, end_ts, tau, drafted, accepted) values (?, ?, ?, ?, ?, ?)",
        rows,
    )
    got = con.sql((Path(__file__).parent.parent / "queries" / "diagnose_windows.sql").read_text()).fetchall()
    con.close()
    cols = ["deployment", "tau", "dimension", "value", "hour", "source", "n", "accepted", "drafted"]
    got_rows = [dict(zip(cols, r[: len(cols)])) for r in got]
    assert {r["source"] for r in got_rows} == {"vllm-v1-log/2025-09"}  # the source with more windows
    assert [(r["n"], r["drafted"], r["accepted"]) for r in got_rows] == [(12, 1200, 600)] * 3


def test_flag_says_an_engine_finding_has_no_requests_to_replay(root: Path) -> None:
    db, _ = _store(root, "flag", "regression", "prometheus")
    _findings(db)
    con = duckdb.connect(str(db))
    try:
        with pytest.raises(InputError, match="engine metrics .*no requests of chat-prod to replay"):
            flag(con, finding_id=1)
        assert flag(con, kind="acceptance_regression") == []
    finally:
        con.close()
