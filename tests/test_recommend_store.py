"""`specdiag recommend` from the store, on fleets generated here with numpy (known acceptance and costs)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from specdiag.diagnose import diagnose
from specdiag.queries import find_query
from specdiag.recommend import recommend_from_store, recommend_report
from specdiag.speedup import CostModel, best_tau, speedup_curve
from specdiag.store import connect


@dataclass
class Fleet:
    """Ground truth of one synthetic deployment segment."""

    deployment: str
    cond_alpha: np.ndarray  # true conditional acceptance by position (16 positions)
    cost: CostModel
    tau: int  # configured (logged) tau
    requests: int
    steps_per_request: int = 20
    task: str = "chat"
    draft_model: str = "draft-s"
    batch_sizes: tuple[int, ...] = (4,)
    control_share: float = 0.2  # share of requests at tau = 0
    heterogeneity: float = 0.0  # sd of a per-request shift of acceptance (logit scale)
    draft_probs: bool = False


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def write_fleet(
    con: duckdb.DuckDBPyConnection, fleet: Fleet, rng: np.random.Generator, noise: float = 0.03
) -> None:
    """Insert requests and steps drawn from the truth: each draft position accepted with its conditional
    probability given the previous ones (the step stops at the first rejection); times from the cost model."""
    n, s = fleet.requests, fleet.steps_per_request
    ids = [f"{fleet.deployment}-{fleet.task}-{fleet.draft_model}-{i}" for i in range(n)]
    control = rng.random(n) < fleet.control_share
    tau = np.where(control, 0, fleet.tau)
    shift = rng.normal(0.0, fleet.heterogeneity, n) if fleet.heterogeneity else np.zeros(n)
    cond = 1 / (1 + np.exp(-(_logit(np.clip(fleet.cond_alpha, 1e-6, 1 - 1e-6))[None, :] + shift[:, None])))
    batch = rng.choice(np.asarray(fleet.batch_sizes), size=(n, s))
    req_tau = np.repeat(tau, s)
    req_cond = np.repeat(cond, s, axis=0)
    u = rng.random((n * s, 16))
    ok = (u < req_cond) & (np.arange(16)[None, :] < req_tau[:, None])
    accepted = np.cumprod(ok, axis=1).sum(axis=1)
    b = batch.reshape(-1)
    jitter = 1 + noise * rng.standard_normal((2, n * s))
    verify = fleet.cost.target_ms(req_tau + 1, b) * jitter[0]
    draft = req_tau * fleet.cost.draft_ms_per_token * jitter[1]
    t0 = datetime(2026, 1, 1)
    req_df = pl.DataFrame(
        {
            "request_id": ids,
            "source": ["trace"] * n,
            "ts": [t0 + timedelta(seconds=i) for i in range(n)],
            "deployment": [fleet.deployment] * n,
            "target_model": ["target-l"] * n,
            "draft_model": [fleet.draft_model] * n,
            "tau": tau.tolist(),
            "task": [fleet.task] * n,
            "batch_size": batch[:, 0].tolist(),
        }
    )
    step_df = pl.DataFrame(
        {
            "request_id": np.repeat(ids, s).tolist(),
            "step": np.tile(np.arange(s), n).tolist(),
            "drafted": req_tau.tolist(),
            "accepted": accepted.tolist(),
            "draft_ms": draft.tolist(),
            "verify_ms": verify.tolist(),
            "batch_size": b.tolist(),
        }
    )
    if fleet.draft_probs:
        # q of each drafted token: high where the target accepts it, lower where it rejects
        q = np.where(ok, rng.uniform(0.5, 1.0, (n * s, 16)), rng.uniform(0.0, 0.6, (n * s, 16)))
        step_df = step_df.with_columns(
            pl.Series("draft_probs", [row[:t].tolist() for row, t in zip(q, req_tau)])
        )
    con.register("req_df", req_df)
    con.register("step_df", step_df)
    con.execute("insert into requests by name select * from req_df")
    con.execute("insert into steps by name select * from step_df")
    con.unregister("req_df")
    con.unregister("step_df")


def true_cond(fleet: Fleet) -> np.ndarray:
    """Population conditional acceptance: with a per-request logit shift z ~ N(0, sd), the pooled product-limit
    estimate converges to E_z[P(reach k)] / E_z[P(reach k-1)] (Gauss-Hermite quadrature over z)."""
    if not fleet.heterogeneity:
        return fleet.cond_alpha
    z, w = np.polynomial.hermite_e.hermegauss(40)
    w = w / w.sum()
    cond = 1 / (1 + np.exp(-(_logit(fleet.cond_alpha)[None, :] + fleet.heterogeneity * z[:, None])))
    reach = (w[:, None] * np.cumprod(cond, axis=1)).sum(axis=0)
    return reach / np.concatenate([[1.0], reach[:-1]])


def true_best(fleet: Fleet, batch: float) -> tuple[list[dict[str, float]], int]:
    curve = speedup_curve(true_cond(fleet), fleet.cost, batch)
    return curve, best_tau(curve)


DECAY = np.array([0.92, 0.88, 0.84, 0.8, 0.78, 0.76, 0.74, 0.72] + [0.7] * 8)
COST = CostModel(floor_ms=20.0, compute_ms=0.02, draft_ms_per_token=1.2)


@pytest.fixture(scope="module")
def fleet_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Fleet]]:
    db = tmp_path_factory.mktemp("fleet") / "fleet.duckdb"
    rng = np.random.default_rng(7)
    fleets = [
        Fleet("chat-eu", DECAY, COST, tau=4, requests=400, heterogeneity=0.3, task="chat"),
        Fleet("chat-eu", DECAY * 0.7, COST, tau=4, requests=400, heterogeneity=0.3, task="code"),
        Fleet(
            "batchy",
            np.full(16, 0.75),
            CostModel(15.0, 0.05, 0.8),
            tau=3,
            requests=300,
            batch_sizes=(1, 16, 64),
        ),
    ]
    con = connect(db)
    for f in fleets:
        write_fleet(con, f, rng)
    con.close()
    return db, fleets


def _one(recs: list[dict], deployment: str, **segment: str) -> dict:
    (rec,) = [r for r in recs if r["deployment"] == deployment and r["segment"] == segment]
    return rec


def test_recommended_tau_reaches_95_percent_of_the_true_best(fleet_db) -> None:
    db, fleets = fleet_db
    con = connect(db, read_only=True)
    recs = recommend_from_store(con, by=["task"], n_boot=100)
    con.close()
    for f in fleets[:2]:
        rec = _one(recs, f.deployment, task=f.task)
        curve, best = true_best(f, rec["batch_size"])
        assert curve[rec["recommended_tau"]]["speedup"] >= 0.95 * curve[best]["speedup"], f.task
        lo, hi = rec["ci"]
        assert lo <= rec["expected_speedup"] <= hi
        assert rec["current_tau"] == f.tau
        # the current speedup is the model's value at the logged tau, not an assumption of free verification
        assert rec["current_speedup"] == pytest.approx(curve[f.tau]["speedup"], rel=0.05)
    # the code segment accepts less, so it should not be told to draft more than chat
    assert (
        _one(recs, "chat-eu", task="code")["recommended_tau"]
        <= _one(recs, "chat-eu", task="chat")["recommended_tau"]
    )


def test_bootstrap_interval_covers_the_true_speedup(fleet_db) -> None:
    db, fleets = fleet_db
    con = connect(db, read_only=True)
    rec = _one(recommend_from_store(con, by=["task"], n_boot=200, seed=3), "chat-eu", task="chat")
    con.close()
    truth, _ = true_best(fleets[0], rec["batch_size"])
    # at the logged tau the acceptance is measured, not extrapolated: the interval must cover the truth
    lo, hi = rec["curve"][4]["ci"]
    assert lo <= truth[4]["speedup"] <= hi
    assert hi - lo < 0.3


def test_costly_verification_at_large_batch_gives_a_tau_per_batch_size(fleet_db) -> None:
    db, fleets = fleet_db
    con = connect(db, read_only=True)
    rec = _one(recommend_from_store(con, n_boot=20), "batchy")
    con.close()
    # 4,800 verify steps of i.i.d. acceptance: nearly every bootstrap replicate agrees on the best tau
    assert rec["p_best"] >= 0.9
    table = rec["tau_by_batch_size"]
    assert [(row["batch_size"], row["batch_size_max"]) for row in table] == [(1, 1), (16, 16), (64, 64)]
    taus = [row["recommended_tau"] for row in table]
    assert taus[0] > taus[-1]  # verification is not free: at batch 64 the compute term caps tau
    for row in table:
        curve = speedup_curve(0.75, fleets[2].cost, row["batch_size"])
        assert curve[row["recommended_tau"]]["speedup"] >= 0.95 * curve[best_tau(curve)]["speedup"]


def test_budget_allocation_beats_uniform_tau(fleet_db) -> None:
    db, _ = fleet_db
    con = connect(db, read_only=True)
    report = recommend_report(con, by=["task"], n_boot=0, budget=16)
    con.close()
    (budget,) = [b for b in report["budget"] if b["deployment"] == "chat-eu"]
    assert budget["batch_size"] == 4
    assert sum(c["sequences"] for c in budget["classes"]) == 4
    used = sum(c["sequences"] * (c["tau"] + 1) for c in budget["classes"])
    assert used <= 16 + 1e-9
    assert budget["expected_accepted"] >= budget["uniform_expected_accepted"]
    by_task = {c["segment"]["task"]: c["tau"] for c in budget["classes"]}
    assert by_task["chat"] >= by_task["code"]  # the budget goes where drafts are accepted


def test_policies_are_ranked_and_say_when_draft_probs_are_missing(fleet_db) -> None:
    db, _ = fleet_db
    con = connect(db, read_only=True)
    report = recommend_report(con, n_boot=0)
    con.close()
    for p in report["policies"]:
        speeds = [r["expected_speedup"] for r in p["ranking"]]
        assert speeds == sorted(speeds, reverse=True)
        assert {r["policy"] for r in p["ranking"]} == {"fixed", "heuristic"}
        assert any("no draft_probs" in n for n in p["notes"])


def test_confidence_threshold_is_evaluated_with_draft_probs(db: Path) -> None:
    con = connect(db)
    write_fleet(
        con, Fleet("probs", DECAY, COST, tau=6, requests=200, draft_probs=True), np.random.default_rng(1)
    )
    report = recommend_report(con, n_boot=0)
    con.close()
    (p,) = report["policies"]
    (thr,) = [r for r in p["ranking"] if r["policy"] == "confidence_threshold"]
    # the synthetic q separates accepted from rejected tokens, so stopping at low q must beat the logged tau
    assert thr["threshold"] > 0
    assert thr["expected_speedup"] > thr["logged_fixed_speedup"]


def test_drafts_are_ranked_and_an_expensive_draft_is_flagged(db: Path) -> None:
    rng = np.random.default_rng(2)
    con = connect(db)
    write_fleet(con, Fleet("pair", DECAY, COST, tau=4, requests=200, draft_model="small"), rng)
    expensive = CostModel(COST.floor_ms, COST.compute_ms, draft_ms_per_token=12.0)  # c = 0.6
    write_fleet(
        con,
        Fleet("pair", np.clip(DECAY + 0.05, 0, 1), expensive, tau=4, requests=200, draft_model="big"),
        rng,
    )
    report = recommend_report(con, by=["draft_model"], n_boot=0)
    con.close()
    (ranked,) = report["drafts"]
    assert [d["draft_model"] for d in ranked["drafts"]] == ["small", "big"]
    flags = {d["draft_model"]: d["not_much_cheaper"] for d in ranked["drafts"]}
    assert flags == {"small": False, "big": True}
    big = _one(report["recommendations"], "pair", draft_model="big")
    assert big["costs"]["draft_ms_per_token"] == pytest.approx(12.0, rel=0.05)


def test_cli_json_shape_and_table(run, fleet_db) -> None:
    db, _ = fleet_db
    res = run("recommend", "--db", db, "--by", "task", "--boot", "20", "--json")
    assert res.exit_code == 0, res.stderr
    payload = json.loads(res.stdout)
    rec = payload["recommendations"][0]
    for key in ("deployment", "segment", "current_tau", "recommended_tau", "alpha", "cost_ratio",
                "current_speedup", "expected_speedup", "ci", "curve"):  # fmt: skip
        assert key in rec
    assert [row["tau"] for row in rec["curve"]] == list(range(17))
    table = run("recommend", "--db", db, "--boot", "10")
    assert table.exit_code == 0
    assert "chat-eu" in table.stdout and "tau recommendations" in table.stdout


def test_cli_rejects_unknown_segment_and_missing_db(run, fleet_db, tmp_path: Path) -> None:
    db, _ = fleet_db
    res = run("recommend", "--db", db, "--by", "task;drop table steps")
    assert res.exit_code == 2
    assert "not a segment column" in res.stderr and "Traceback" not in res.stderr
    res = run("recommend", "--db", tmp_path / "none.duckdb")
    assert res.exit_code == 4 and "no database" in res.stderr


def test_given_cost_ratio_and_empty_store(run, db: Path) -> None:
    connect(db).close()
    res = run("recommend", "--db", db, "--json")
    assert res.exit_code == 0
    assert json.loads(res.stdout)["recommendations"] == []
    assert "nothing to recommend" in res.stderr


def test_deployment_without_timings_needs_a_cost(db: Path) -> None:
    con = connect(db)
    write_fleet(con, Fleet("untimed", DECAY, COST, tau=4, requests=50), np.random.default_rng(3))
    con.execute("update steps set draft_ms = null, verify_ms = null")
    assert recommend_from_store(con, n_boot=0) == []  # every row it returns is complete
    report = recommend_report(con, n_boot=0)
    assert report["recommendations"] == []
    (skipped,) = report["skipped"]
    assert skipped["deployment"] == "untimed" and "pass --cost" in skipped["reason"]
    (given,) = recommend_from_store(con, n_boot=0, cost_ratio=0.05)
    con.close()
    assert given["costs"]["source"] == "given"
    assert given["cost_ratio"] == pytest.approx(0.05)


def test_switch_off_note_agrees_with_the_recommendation(db: Path) -> None:
    """Acceptance that falls with position: at the logged tau 8 the i.i.d. alpha (0.51) is below c (0.55), yet tau 1
    gives (1 + 0.95) / 1.55 = 1.26x. The note said "speculation cannot help" beside that recommendation."""
    con = connect(db)
    rng = np.random.default_rng(1)
    front = np.array([0.95] + [0.1] * 15)
    write_fleet(con, Fleet("front", front, CostModel(10.0, 0.0, 5.5), tau=8, requests=200), rng)
    write_fleet(con, Fleet("poor", np.full(16, 0.3), CostModel(10.0, 0.0, 5.5), tau=4, requests=200), rng)
    recs = {r["deployment"]: r for r in recommend_from_store(con, n_boot=0)}
    con.close()
    front_rec, poor = recs["front"], recs["poor"]
    assert front_rec["alpha"] < front_rec["cost_ratio"]
    assert front_rec["recommended_tau"] == 1 and front_rec["expected_speedup"] > 1.2
    assert not any("cannot help" in n or "switch speculation off" in n for n in front_rec["notes"])
    assert poor["recommended_tau"] == 0
    assert any("switch speculation off" in n and "Cor. 3.9" in n for n in poor["notes"])


def test_draft_bottleneck_defers_to_the_curve_when_acceptance_falls_with_position(db: Path) -> None:
    """The same fleets through diagnose: Cor. 3.9 (alpha <= c) made "front" a high draft_bottleneck ("speculation
    cannot help") beside its tau_too_high finding that tau 1 gives 1.26x."""
    con = connect(db)
    rng = np.random.default_rng(1)
    write_fleet(
        con,
        Fleet("front", np.array([0.95] + [0.1] * 15), CostModel(10.0, 0.0, 5.5), tau=8, requests=200),
        rng,
    )
    write_fleet(con, Fleet("poor", np.full(16, 0.3), CostModel(10.0, 0.0, 5.5), tau=4, requests=200), rng)
    found = diagnose(con)
    con.close()
    bottleneck = {f.deployment: f.summary for f in found if f.kind == "draft_bottleneck"}
    assert any(f.kind == "tau_too_high" and f.deployment == "front" for f in found)
    assert "cannot help" not in bottleneck["front"]  # still a bottleneck: the draft takes 81% of each step
    assert "cannot help" in bottleneck["poor"]


def test_a_logged_tau_beyond_max_tau_is_modelled_as_logged(run, db: Path) -> None:
    """tau 12 logged, --max-tau 8: current_tau and current_speedup were silently those of tau 8."""
    con = connect(db)
    write_fleet(con, Fleet("wide", DECAY, COST, tau=12, requests=100), np.random.default_rng(4))
    (rec,) = recommend_from_store(con, max_tau=8, n_boot=0)
    (full,) = recommend_from_store(con, max_tau=12, n_boot=0)
    report = recommend_report(con, max_tau=8, n_boot=0)
    con.close()
    assert rec["current_tau"] == 12 and len(rec["curve"]) == 13
    assert rec["current_speedup"] == pytest.approx(full["current_speedup"])
    assert report["policies"] and "Traceback" not in run("recommend", "--db", db, "--max-tau", "8").stderr


def test_current_tau_is_the_one_the_deployment_runs_now(db: Path) -> None:
    """Most requests ran at tau 8, then the deployment moved to tau 4: the current tau is 4 (the most common of its
    last day), not the 8 it left, so the gain is measured from what it runs."""
    con = connect(db)
    rng = np.random.default_rng(10)
    write_fleet(con, Fleet("chat", DECAY, COST, tau=8, requests=300), rng)
    write_fleet(con, Fleet("chat", DECAY, COST, tau=4, requests=100, draft_model="draft-t"), rng)
    con.execute("update requests set ts = ts + interval 3 day where draft_model = 'draft-t'")
    (rec,) = recommend_from_store(con, n_boot=0)
    con.close()
    assert rec["current_tau"] == 4
    assert rec["current_speedup"] == pytest.approx(rec["curve"][4]["speedup"])


def test_verify_times_all_zero_are_no_cost_model(run, db: Path) -> None:
    """verify_ms = 0 on every step (valid in the trace format: a timer that never ran) made t_target(1) = 0 and
    recommend (and diagnose, which calls it) died on a ZeroDivisionError: the deployment is skipped instead."""
    con = connect(db)
    write_fleet(con, Fleet("zero-timer", DECAY, COST, tau=4, requests=50), np.random.default_rng(3))
    con.execute("update steps set verify_ms = 0")
    report = recommend_report(con, n_boot=5)
    con.close()
    assert report["recommendations"] == []
    (skipped,) = report["skipped"]
    assert skipped["deployment"] == "zero-timer" and "pass --cost" in skipped["reason"]
    res = run("recommend", "--db", db)
    assert res.exit_code == 0 and "Traceback" not in res.stderr


def test_engine_windows_and_request_records_feed_the_same_estimator(db: Path) -> None:
    """Engine counters (accepted_per_position = steps whose accepted count reached i+1) give the censored estimate."""
    rng = np.random.default_rng(5)
    truth = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    con = connect(db)
    for i in range(40):  # 40 windows of 500 verify steps at tau 5, for a deployment with no request records
        ok = rng.random((500, 5)) < truth[None, :]
        accepted = np.cumprod(ok, axis=1).sum(axis=1)
        per_position = [float((accepted >= k).sum()) for k in range(1, 6)]
        con.execute(
            "insert into windows (source, deployment, end_ts, tau, verify_steps, drafted, accepted,"
            " accepted_per_position, file_id, line) values ('test', 'engine', ?, 5, 500, 2500, ?, ?, 'f', ?)",
            [datetime(2026, 1, 1) + timedelta(minutes=i), int(accepted.sum()), per_position, i],
        )
    for i in range(40):  # and per-request engine records (no steps) for another deployment
        ok = rng.random((200, 5)) < truth[None, :]
        accepted = np.cumprod(ok, axis=1).sum(axis=1)
        con.execute(
            "insert into requests (request_id, source, ts, deployment, tau, verify_steps, drafted, accepted,"
            " accepted_per_position) values (?, 'vllm-request', ?, 'records', 5, 200, 1000, ?, ?)",
            [
                f"q{i}",
                datetime(2026, 1, 1),
                int(accepted.sum()),
                [int((accepted >= k).sum()) for k in range(1, 6)],
            ],
        )
    recs = {r["deployment"]: r for r in recommend_from_store(con, n_boot=50, cost_ratio=0.05)}
    con.close()
    assert set(recs) == {"engine", "records"}
    for rec in recs.values():
        assert rec["current_tau"] == 5 and rec["estimated_positions"] == 5
        np.testing.assert_allclose(rec["alpha_by_position"][:5], truth, atol=0.02)
    assert recs["engine"]["requests"] == 40  # each window is one resampling unit
    # without --cost the windows-only deployment is skipped for its costs, its windows counted, never loaded
    con = connect(db)
    calls: list[tuple[str, tuple[object, ...]]] = []
    traced = _Tracing(con, calls)
    report = recommend_report(traced, n_boot=0)  # type: ignore[arg-type]
    con.close()
    assert [r["deployment"] for r in report["recommendations"]] == []
    engine = next(r for r in report["skipped"] if r["deployment"] == "engine")
    assert engine["requests"] == 40 and engine["current_tau"] == 5 and "pass --cost" in engine["reason"]
    assert ("set variable with_windows = cast($value as boolean)", ({"value": "false"},)) in calls


class _Tracing:
    """A connection that records the SQL it runs (and the variables set for it)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, calls: list[tuple[str, tuple[object, ...]]]) -> None:
        self._con, self._calls = con, calls

    def execute(self, sql: str, *args: object) -> duckdb.DuckDBPyConnection:
        self._calls.append((sql, args))
        return self._con.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self._con, name)


def test_replayed_drafts_are_ranked_by_measured_speedup(run, db: Path) -> None:
    con = connect(db)
    rows = [
        # draft, tau, steps, drafted, accepted, draft_ms, verify_ms, target_only_ms (per prompt)
        ("small", 4, 100, 400, 240, 100.0, 2400.0, 7800.0),  # c = 0.25 / (7800 / 340) = 0.011
        ("small", 6, 100, 600, 280, 150.0, 2500.0, 8400.0),
        ("twin", 4, 100, 400, 360, 4000.0, 2400.0, 9800.0),  # c = 10 / (9800 / 460) = 0.47 -> not flagged
        ("huge", 4, 100, 400, 380, 9000.0, 2400.0, 10000.0),  # c = 22.5 / (10000 / 480) = 1.08 -> flagged
    ]
    for i, (draft, tau, steps, drafted, accepted, d_ms, v_ms, t_ms) in enumerate(rows):
        con.execute(
            "insert into replay_runs (run_id, prompt_id, created_at, target, draft, tau, steps, drafted, accepted,"
            " draft_ms, verify_ms, target_only_ms) values (?, 'p1', ?, 'big-target', ?, ?, ?, ?, ?, ?, ?, ?)",
            [f"run{i}", datetime(2026, 1, 1), draft, tau, steps, drafted, accepted, d_ms, v_ms, t_ms],
        )
    # a lossy (typical) run of the slowest draft that would put it first: left out of the ranking
    con.execute(
        "insert into replay_runs (run_id, prompt_id, created_at, target, draft, tau, acceptance, steps, drafted,"
        " accepted, draft_ms, verify_ms, target_only_ms) values ('lossy', 'p1', ?, 'big-target', 'huge', 4,"
        " 'typical', 100, 400, 400, 10.0, 100.0, 100000.0)",
        [datetime(2026, 1, 1)],
    )
    # run0's steps: the last drafted nothing (cut by the token limit), so it is not a verify step of the MAL
    con.execute(
        "insert into replay_steps select 'run0', 'p1', i, case when i < 99 then 4 else 0 end, 0, 0, 0"
        " from range(100) t(i)"
    )
    cur = con.execute(find_query("recommend_replay_drafts").sql)
    names = [d[0] for d in cur.description]
    measured = sorted(
        (r["draft"], r["tau"], r["runs"], r["mean_acceptance_length"])
        for r in (dict(zip(names, row)) for row in cur.fetchall())
        if r["draft"] in ("small", "huge")
    )
    assert measured == [
        ("huge", 4, 1, 1 + 380 / 100),
        ("small", 4, 1, 1 + 240 / 99),
        ("small", 6, 1, 1 + 280 / 100),
    ]
    report = recommend_report(con, n_boot=0)
    con.close()
    (ranked,) = [d for d in report["drafts"] if d["source"] == "replay"]
    assert ranked["target_model"] == "big-target"
    drafts = {d["draft_model"]: d for d in ranked["drafts"]}
    assert [d["draft_model"] for d in ranked["drafts"]] == ["small", "twin", "huge"]
    # small: tau 4 gives 7800 / 2500 = 3.12x, tau 6 gives 8400 / 2650 = 3.17x
    assert drafts["small"]["recommended_tau"] == 6
    assert drafts["small"]["expected_speedup"] == pytest.approx(8400 / 2650)
    assert drafts["huge"]["not_much_cheaper"] and not drafts["twin"]["not_much_cheaper"]
    assert drafts["huge"]["cost_ratio"] == pytest.approx(22.5 / (10000 / 480))
    table = run("recommend", "--db", db, "--boot", "0")
    assert "target big-target (replays)" in table.stdout and "not much cheaper" in table.stdout


def test_current_tau_falls_back_to_the_longest_draft_when_tau_is_not_logged(db: Path) -> None:
    con = connect(db)
    write_fleet(con, Fleet("no-tau", DECAY, COST, tau=5, requests=60), np.random.default_rng(8))
    con.execute("update requests set tau = null")
    (rec,) = recommend_from_store(con, n_boot=0)
    con.close()
    assert rec["current_tau"] == 5
    assert any("no configured tau" in n for n in rec["notes"])


def test_segment_identifiers_are_checked_where_they_enter_sql() -> None:
    # every helper that takes --by columns into a query checks them against SEGMENT_COLUMNS itself
    from specdiag.errors import UsageError
    from specdiag.recommend import _acceptance_units, _groups

    con = duckdb.connect()
    for call in (
        lambda: _groups(con, ("task from requests; --",)),
        lambda: _acceptance_units(con, ("x",), 4),
    ):
        with pytest.raises(UsageError, match="not a segment column"):
            call()


def test_engine_windows_without_counts_are_named_as_the_reason(run, db: Path) -> None:
    """SGLang logs print a MAL but no token counts: recommend says so, and prints no empty table."""
    log = Path(__file__).parent / "fixtures" / "engines" / "sglang.log"
    assert run("ingest", log, "--db", db).exit_code == 0
    res = run("recommend", "--db", db)
    assert res.exit_code == 0 and res.stdout == ""
    assert "engine windows without accepted token counts (SGLang logs print none)" in res.stderr
    res = run("recommend", "--db", db, "--json")
    assert json.loads(res.stdout)["recommendations"] == []


@pytest.mark.parametrize("cost", ["nan", "-1", "inf"])
def test_store_mode_rejects_a_cost_that_is_not_finite_and_non_negative(run, db: Path, cost: str) -> None:
    """--cost from the store is checked like --cost in analytic mode: no NaN table, no ZeroDivisionError traceback."""
    con = connect(db)
    write_fleet(con, Fleet("chat", DECAY, COST, tau=4, requests=30), np.random.default_rng(5))
    con.close()
    res = run("recommend", "--db", db, "--cost", cost, "--boot", "0")
    assert res.exit_code == 2, res.stdout + res.stderr
    assert "must be a finite number >= 0" in res.stderr and "Traceback" not in res.stderr
    assert "nan" not in res.stdout


def test_store_mode_survives_a_finite_cost_whose_step_time_overflows(run, db: Path) -> None:
    """--cost 1e308 is finite, but tau * c overflows: the current speedup is 0 and its gain divided by zero."""
    con = connect(db)
    write_fleet(con, Fleet("chat", DECAY, COST, tau=4, requests=30), np.random.default_rng(5))
    (rec,) = recommend_from_store(con, n_boot=0, cost_ratio=1e308)
    con.close()
    assert rec["recommended_tau"] == 0 and rec["gain"] is None
    res = run("recommend", "--db", db, "--cost", "1e308", "--boot", "0")
    assert res.exit_code == 0 and "Traceback" not in res.stderr


def test_deployments_without_acceptance_units_are_skipped_with_a_reason(db: Path) -> None:
    """A deployment logged with request totals only, or with tau = 0 control traffic only, is listed under skipped
    instead of vanishing from the report."""
    con = connect(db)
    write_fleet(con, Fleet("chat", DECAY, COST, tau=4, requests=30), np.random.default_rng(6))
    con.execute(
        """
        insert into requests (request_id, source, ts, deployment, target_model, draft_model, tau,
                              verify_steps, drafted, accepted, draft_ms, verify_ms)
        select 'tot-' || i, 'trace', timestamp '2026-01-01', 'totals-only', 'target-l', 'draft-s', 4,
               10, 40, 25, 40.0, 200.0
        from range(20) as t(i)
        """
    )
    report = recommend_report(con, n_boot=0)
    con.close()
    assert [r["deployment"] for r in report["recommendations"]] == ["chat"]
    (skipped,) = report["skipped"]
    assert skipped["deployment"] == "totals-only" and skipped["requests"] == 20
    assert skipped["current_tau"] == 4 and "totals only" in skipped["reason"]


def test_a_segment_without_acceptance_units_is_skipped_beside_its_deployments_others(db: Path) -> None:
    """--by task: a task with tau = 0 control traffic only, in a deployment whose other task has steps, vanished
    from both the recommendations and skipped."""
    con = connect(db)
    write_fleet(con, Fleet("chat", DECAY, COST, tau=4, requests=30), np.random.default_rng(8))
    write_fleet(
        con,
        Fleet("chat", DECAY, COST, tau=4, requests=10, task="code", control_share=1.0),
        np.random.default_rng(9),
    )
    report = recommend_report(con, by=["task"], n_boot=0)
    con.close()
    assert [r["segment"] for r in report["recommendations"]] == [{"task": "chat"}]
    (skipped,) = report["skipped"]
    assert skipped["segment"] == {"task": "code"} and "control only" in skipped["reason"]


def test_engine_windows_without_counts_are_skipped_beside_other_deployments(run, db: Path) -> None:
    """In a store with other deployments, a deployment known only from SGLang windows is listed under skipped."""
    con = connect(db)
    write_fleet(con, Fleet("chat", DECAY, COST, tau=4, requests=30), np.random.default_rng(7))
    con.close()
    log = Path(__file__).parent / "fixtures" / "engines" / "sglang.log"
    assert run("ingest", log, "--db", db, "--deployment", "sgl").exit_code == 0
    report = json.loads(run("recommend", "--db", db, "--json", "--boot", "0").stdout)
    assert [r["deployment"] for r in report["recommendations"]] == ["chat"]
    (skipped,) = report["skipped"]
    assert skipped["deployment"] == "sgl" and "SGLang logs print none" in skipped["reason"]
