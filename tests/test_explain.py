"""`specdiag explain`: one test per verdict on requests built so the bottleneck is known, plus the views and errors.

Each store holds one deployment whose step times follow a known cost model, t_verify(n, B) = floor + compute x n x B
and draft_ms = drafted x draft_per_token, with tau = 0 control requests at several batch sizes (so the cost fit has
both axes) and the request under test, "x", whose accepted counts follow the i.i.d. model for a chosen alpha.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specdiag.explain import compress_steps, explain_request
from specdiag.speedup import expected_tokens_iid
from specdiag.store import connect

T0 = datetime(2026, 7, 20, 10, 0)


def iid_accepted(alpha: float, tau: int, n: int) -> list[int]:
    """n accepted counts whose histogram is the i.i.d. one: P(k) = alpha^k (1 - alpha) for k < tau, alpha^tau at tau."""
    probs = [alpha**k * (1 - alpha) for k in range(tau)] + [alpha**tau]
    counts = [round(p * n) for p in probs]
    out = [k for k, c in enumerate(counts) for _ in range(c)]
    return sorted(
        out, key=lambda k: (hash(k) % 7, k)
    )  # interleave a little; order does not matter to the totals


def add_request(
    con: duckdb.DuckDBPyConnection,
    rid: str,
    tau: int,
    accepted: list[int],
    *,
    batch: int,
    floor: float,
    compute: float,
    draft_per_token: float,
    outside_ms: float = 50.0,
    token_detail: bool = False,
) -> None:
    rows = []
    for i, a in enumerate(accepted):
        verify = floor + compute * (tau + 1) * batch
        draft = tau * draft_per_token
        detail = (
            (list(range(100, 100 + tau)), [0.9] * tau, [0.8] * a + [0.05] * (tau - a))
            if token_detail
            else (None,) * 3
        )
        rows.append([rid, i, tau, a, draft if tau else None, verify, batch, *detail])
    step_ms = sum((r[4] or 0.0) + r[5] for r in rows)
    con.execute(
        "insert into requests (request_id, source, ts, deployment, target_model, draft_model, tau, latency_ms,"
        " batch_size) values (?, 'trace', ?, 'dep', 'big@v1', 'small@v1', ?, ?, ?)",
        [rid, T0, tau, step_ms + outside_ms, batch],
    )
    columns = ["request_id", "step", "drafted", "accepted", "draft_ms", "verify_ms", "batch_size"]
    columns += ["draft_token_ids", "draft_probs", "target_probs"]
    new_steps = pa.table({c: [r[k] for r in rows] for k, c in enumerate(columns)})  # noqa: F841 (read by DuckDB)
    con.execute(
        f"insert into steps ({', '.join(columns)}) select * from new_steps"
    )  # one insert, not one per row


def build(
    db: Path,
    *,
    alpha: float,
    tau: int,
    batch: int = 4,
    floor: float = 20.0,
    compute: float = 0.0,
    draft_per_token: float = 1.0,
    outside_ms: float = 50.0,
    token_detail: bool = False,
) -> duckdb.DuckDBPyConnection:
    con = connect(db)
    costs = {"floor": floor, "compute": compute, "draft_per_token": draft_per_token}
    for b in (1, 2, 4, 8, 16, 32):  # control traffic: one token per step at several batch sizes
        add_request(con, f"control-{b}", 0, [0] * 20, batch=b, **costs)
    add_request(con, "other", tau, iid_accepted(0.7, tau, 100), batch=batch * 2, **costs)
    accepted = iid_accepted(alpha, tau, 200)
    add_request(
        con, "x", tau, accepted, batch=batch, outside_ms=outside_ms, token_detail=token_detail, **costs
    )
    return con


def _explain(db: Path, **kwargs) -> dict:
    con = build(db, **kwargs)
    try:
        return explain_request(con, "x")
    finally:
        con.close()


def test_overhead_outside_decode(db: Path) -> None:
    # 200 steps of ~24 ms = 4.8 s in the decode loop; 10 s outside it
    e = _explain(db, alpha=0.8, tau=4, outside_ms=10_000.0)
    assert e["verdict"]["kind"] == "overhead_outside_decode"
    t = e["totals"]
    assert t["outside_ms"] == pytest.approx(10_000.0)
    assert t["outside_share"] == pytest.approx(10_000 / t["latency_ms"])
    assert t["draft_share"] + t["verify_share"] + t["outside_share"] == pytest.approx(1.0)


def test_low_acceptance(db: Path) -> None:
    e = _explain(db, alpha=0.15, tau=4)
    assert e["verdict"]["kind"] == "low_acceptance"
    assert e["alpha"] == pytest.approx(0.15, abs=0.03)
    assert e["verdict"]["evidence"]["acceptance_rate"] == pytest.approx(
        e["totals"]["accepted"] / e["totals"]["drafted"]
    )


def test_draft_bottleneck(db: Path) -> None:
    # 4 drafts x 8 ms = 32 ms against a 20 ms verify: drafting is 62% of each step
    e = _explain(db, alpha=0.8, tau=4, draft_per_token=8.0)
    assert e["verdict"]["kind"] == "draft_bottleneck"
    assert e["verdict"]["evidence"]["draft_share_of_steps"] == pytest.approx(32 / 52)
    assert e["verdict"]["evidence"]["cost_ratio"] == pytest.approx(8 / 20, rel=0.05)


def test_verify_bound(db: Path) -> None:
    # floor 10 ms + 1 ms per token in flight: at B = 16, verifying 5 tokens costs 90 ms vs 26 ms for one
    e = _explain(db, alpha=0.8, tau=4, batch=16, floor=10.0, compute=1.0, draft_per_token=0.2)
    assert e["verdict"]["kind"] == "verify_bound"
    assert e["verdict"]["evidence"]["verify_growth"] == pytest.approx(90 / 26, rel=0.01)
    assert e["cost_model"]["compute_ms"] == pytest.approx(1.0, rel=0.01)
    assert e["request"]["batch_size"] == 16


def test_tau_too_high(db: Path) -> None:
    # alpha 0.5: E[tokens] saturates near 2, so 8 drafts per step mostly buy draft time (c = 1/20)
    e = _explain(db, alpha=0.5, tau=8)
    assert e["verdict"]["kind"] == "tau_too_high"
    assert e["what_if"]["recommended"]["tau"] < 8
    assert e["what_if"]["recommended"]["speedup"] >= 1.1 * e["what_if"]["current"]["speedup"]


def test_tau_too_low(db: Path) -> None:
    e = _explain(db, alpha=0.9, tau=1)
    assert e["verdict"]["kind"] == "tau_too_low"
    assert e["what_if"]["recommended"]["tau"] > 1


def test_no_bottleneck_and_what_if_costs(db: Path) -> None:
    e = _explain(db, alpha=0.8, tau=7)
    assert e["verdict"]["kind"] == "no_bottleneck"
    w, t = e["what_if"], e["totals"]
    # the model reproduces the observed decode time (the steps were generated from it)
    assert w["current"]["decode_ms"] == pytest.approx(t["draft_ms"] + t["verify_ms"], rel=0.03)
    # speculation off: one 20 ms target pass per token
    assert w["speculation_off"]["decode_ms"] == pytest.approx(t["emitted_tokens"] * 20.0, rel=0.01)
    assert w["speculation_off"]["latency_ms"] == pytest.approx(
        w["speculation_off"]["decode_ms"] + 50.0, rel=0.01
    )
    mal = expected_tokens_iid(e["alpha"], 7)
    assert t["mean_acceptance_length"] == pytest.approx(mal)
    # control at batch 4 (2..8) decodes a token in 20 ms; this request in ~(7 + 20) / MAL ms
    assert e["control"]["batch_matched"] and e["control"]["ms_per_token"] == pytest.approx(20.0)
    assert t["observed_speedup"] == pytest.approx(20.0 / t["decode_ms_per_token"])


def test_speculation_harmful_is_reported_with_low_acceptance(db: Path) -> None:
    e = _explain(db, alpha=0.05, tau=4, draft_per_token=3.0)
    kinds = [e["verdict"]["kind"], *(a["kind"] for a in e["also"])]
    assert kinds[0] == "low_acceptance" and "speculation_harmful" in kinds
    assert e["totals"]["observed_speedup"] < 1.0


def test_rejected_tokens_from_token_detail(db: Path) -> None:
    e = _explain(db, alpha=0.6, tau=3, token_detail=True)
    rejected = e["rejected_tokens"]
    assert rejected and all(r["q"] == 0.9 and r["p"] == 0.05 for r in rejected)
    assert all(r["token_id"] == 100 + r["position"] for r in rejected)


def add_replay(
    con: duckdb.DuckDBPyConnection, run_id: str, created_at: datetime, tokens: list[tuple]
) -> None:
    """A saved replay of request 'x' (prompt p1): tokens as (step, position, token_id, token_text, q, p, accepted)."""
    con.execute(
        "insert into replay_runs (run_id, prompt_id, request_id, created_at) values (?, 'p1', 'x', ?)",
        [run_id, created_at],
    )
    con.executemany(
        "insert into replay_tokens (run_id, prompt_id, step, position, token_id, token_text, q, p, accepted)"
        " values (?, 'p1', ?, ?, ?, ?, ?, ?, ?)",
        [[run_id, *t] for t in tokens],
    )


def test_rejected_tokens_from_replay(db: Path) -> None:
    con = build(db, alpha=0.6, tau=3)
    add_replay(con, "run1", T0, [(0, 0, 7, "ok", 0.5, 0.6, True), (0, 1, 9, "<b>é", 0.7, 0.1, False)])
    e = explain_request(con, "x")
    assert [(r["token_id"], r["token_text"], r["q"], r["p"]) for r in e["rejected_tokens"]] == [
        (9, "<b>é", 0.7, 0.1)
    ]


def test_step_table_compresses_long_requests() -> None:
    steps = [
        {
            "step": i,
            "drafted": 4,
            "accepted": 4 if 10 <= i < 90 else i % 3,
            "draft_ms": 4.0,
            "verify_ms": 20.0,
            "batch_size": 8,
        }
        for i in range(100)
    ]
    table = compress_steps(steps)
    assert len(table) <= 13
    assert sum(r["count"] for r in table) == 100
    assert [r["first_step"] for r in table[:4]] == [0, 1, 2, 3]
    assert table[-1]["first_step"] == 99
    short = compress_steps(steps[:5])
    assert [r["count"] for r in short] == [1] * 5


def test_command_views_and_errors(run, db: Path) -> None:
    build(db, alpha=0.8, tau=4, draft_per_token=8.0).close()
    text = run("explain", "x", "--db", db)
    assert text.exit_code == 0, text.stderr
    assert "verdict: draft_bottleneck" in text.stdout and "what if" in text.stdout
    assert len(text.stdout.splitlines()) <= 40  # one screen
    as_json = json.loads(run("explain", "x", "--db", db, "--json").stdout)
    assert as_json["verdict"]["kind"] == "draft_bottleneck"
    worst = run("explain", "--worst", "2", "--deployment", "dep", "--db", db, "--json")
    ids = [r["request"]["request_id"] for r in json.loads(worst.stdout)["requests"]]
    assert ids[0] == "x" and len(ids) == 2  # x has the most steps and 50 ms outside
    table = run("explain", "--worst", "3", "--deployment", "dep", "--db", db)
    assert table.exit_code == 0 and "draft_bottleneck" in table.stdout
    unknown = run("explain", "nope", "--db", db)
    assert unknown.exit_code == 3 and "no request 'nope'" in unknown.stderr
    assert run("explain", "--worst", "2", "--db", db).exit_code == 2
    assert run("explain", "--worst", "2", "--deployment", "absent", "--db", db).exit_code == 3


def test_request_without_steps(run, db: Path) -> None:
    con = connect(db)
    con.execute(
        "insert into requests (request_id, source, ts, deployment, tau) values ('bare', 'trace', ?, 'd', 4)",
        [T0],
    )
    con.close()
    result = run("explain", "bare", "--db", db)
    assert result.exit_code == 3 and "has no steps" in result.stderr


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The simulator's `bottleneck` scenario (a tau misconfiguration and a batch-size surge), ingested."""
    from specdiag.ingest import ingest_paths
    from specdiag.simulate import simulate

    folder = tmp_path_factory.mktemp("sim")
    truth = simulate(folder / "fleet.jsonl", scenario="bottleneck", requests=200, seed=3)
    ingest_paths([folder / "fleet.jsonl"], db=folder / "fleet.duckdb", progress=False)
    return folder / "fleet.duckdb", truth


def test_simulated_incidents_get_their_verdicts(simulated: tuple[Path, dict]) -> None:
    db, truth = simulated
    incidents = {i["kind"]: i for i in truth["incidents"]}
    misconfig, surge = incidents["tau_misconfig"], incidents["batch_surge"]
    con = connect(db, read_only=True)
    try:
        verdicts: dict[str, list[str]] = {"tau_misconfig": [], "batch_surge": []}
        for name, incident in (("tau_misconfig", misconfig), ("batch_surge", surge)):
            start = datetime.fromisoformat(incident["start"].replace("Z", ""))
            ids = con.execute(
                "select request_id from requests where deployment = ? and ts >= ? and tau > 0 order by ts limit 15",
                [incident["deployment"], start],
            ).fetchall()
            fits: dict = {}
            verdicts[name] = [explain_request(con, rid, fits)["verdict"]["kind"] for (rid,) in ids]
    finally:
        con.close()
    # tau raised to 12 on a draft whose acceptance decays: most of those requests should run at a smaller tau
    assert max(set(verdicts["tau_misconfig"]), key=verdicts["tau_misconfig"].count) == "tau_too_high"
    # batch sizes x4: verifying tau + 1 tokens per sequence now dominates
    assert max(set(verdicts["batch_surge"]), key=verdicts["batch_surge"].count) == "verify_bound"


@settings(max_examples=40, deadline=None)
@given(pairs=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), max_size=300))
def test_step_table_keeps_every_step_in_order(pairs: list[tuple[int, int]]) -> None:
    steps = [
        {
            "step": i,
            "drafted": max(d, a),
            "accepted": a,
            "draft_ms": None,
            "verify_ms": 1.0,
            "batch_size": None,
        }
        for i, (d, a) in enumerate(pairs)
    ]
    table = compress_steps(steps)
    assert sum(r["count"] for r in table) == len(steps)
    assert len(table) <= 13  # HEAD + TAIL + MIDDLE_ROWS: one screen
    firsts = [r["first_step"] for r in table]
    assert firsts == sorted(firsts)
    assert all(r["last_step"] - r["first_step"] + 1 == r["count"] for r in table)


def test_zero_timings_do_not_divide_by_zero(db: Path) -> None:
    e = _explain(db, alpha=0.7, tau=4, floor=0.0, draft_per_token=0.0, outside_ms=0.0)
    assert e["what_if"] is None and e["verdict"]["kind"] == "no_bottleneck"
    assert e["totals"]["decode_ms_per_token"] == 0.0
