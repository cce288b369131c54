"""On simulated fleets (specdiag.simulate, ingested by specdiag.ingest) the recommended tau reaches at least 95% of
the true best speedup from the simulator's ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specdiag.ingest import ingest_paths
from specdiag.recommend import recommend_from_store
from specdiag.simulate import simulate
from specdiag.store import connect


@pytest.mark.parametrize("scenario,seed", [("healthy", 1), ("bottleneck", 2)])
def test_recommended_tau_reaches_95_percent_of_the_simulated_best(
    tmp_path: Path, scenario: str, seed: int
) -> None:
    trace = tmp_path / f"{scenario}.jsonl"
    truth = simulate(trace, scenario=scenario, requests=1500, seed=seed)
    db = tmp_path / "sim.duckdb"
    ingest_paths([trace], db=db, progress=False)
    con = connect(db, read_only=True)
    recs = recommend_from_store(con, n_boot=50, seed=seed)
    con.close()
    true = {d["name"]: d for d in truth["deployments"]}
    assert {r["deployment"] for r in recs} == set(true)
    for rec in recs:
        curve = true[rec["deployment"]]["speedup_curve"]
        best = true[rec["deployment"]]["best_tau"]
        reached = curve[rec["recommended_tau"]]["speedup"] / curve[best]["speedup"]
        assert reached >= 0.95, (rec["deployment"], rec["recommended_tau"], best, reached)
        # costs are fitted, not assumed: the simulator's cost model comes back within a few percent
        fitted, cost = rec["costs"], true[rec["deployment"]]["cost_model"]
        assert fitted["floor_ms"] == pytest.approx(cost["floor_ms"], rel=0.05)
        assert fitted["compute_ms"] == pytest.approx(cost["compute_ms"], rel=0.1)
        assert fitted["draft_ms_per_token"] == pytest.approx(cost["draft_ms_per_token"], rel=0.05)


def test_cli_on_a_simulated_fleet_by_task(run, tmp_path: Path) -> None:
    trace = tmp_path / "healthy.jsonl"
    simulate(trace, scenario="healthy", requests=600, seed=3)
    db = tmp_path / "sim.duckdb"
    ingest_paths([trace], db=db, progress=False)
    res = run("recommend", "--db", db, "--by", "task", "--boot", "20", "--budget", "64", "--json")
    assert res.exit_code == 0, res.stderr
    payload = json.loads(res.stdout)
    assert {r["segment"]["task"] for r in payload["recommendations"] if r["deployment"] == "chat-prod"} >= {
        "chat"
    }
    assert all(0 <= r["recommended_tau"] <= 16 for r in payload["recommendations"])
    assert {b["deployment"] for b in payload["budget"]} == {
        r["deployment"] for r in payload["recommendations"]
    }
