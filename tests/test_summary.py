"""`specdiag summary`: per deployment and source, with control traffic, a tau change and MAL-only engine windows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specdiag.speedup import alpha_from_mal, expected_tokens_iid
from specdiag.store import connect
from specdiag.summary import KEYS, summarize
from tests.test_queries import UNICODE_DEPLOYMENT, build_store


@pytest.fixture
def store(db: Path) -> Path:
    build_store(db).close()
    return db


def test_json_rows_per_deployment_and_source(run, store: Path) -> None:
    result = run("summary", "--db", store, "--json")
    rows = json.loads(result.stdout)["rows"]
    assert all(list(r) == list(KEYS) for r in rows)
    by = {(r["deployment"], r["source"]): r for r in rows}
    assert set(by) == {
        ("chat", "trace"),
        ("chat", "vllm-request"),
        ("chat", "vllm-v1-log/2025-09"),
        ("chat", "sglang-log"),
        (UNICODE_DEPLOYMENT, "trace"),
    }
    trace = by[("chat", "trace")]
    # r1..r4; the tau = 0 request r3 counts as a request and adds no verify steps
    assert (trace["requests"], trace["windows"], trace["verify_steps"]) == (4, 0, 8)
    assert (trace["drafted"], trace["accepted"]) == (27, 17)
    assert trace["acceptance_rate"] == pytest.approx(17 / 27)
    assert trace["mean_acceptance_length"] == pytest.approx(1 + 17 / 8)
    assert trace["alpha"] is None  # tau changed from 4 to 2: mixed
    engine = by[("chat", "vllm-request")]
    assert engine["mean_acceptance_length"] == pytest.approx(2.5)
    assert engine["alpha"] == pytest.approx(alpha_from_mal(2.5, 3))
    windows = by[("chat", "vllm-v1-log/2025-09")]
    assert (windows["requests"], windows["windows"], windows["verify_steps"]) == (0, 2, 150)
    assert windows["mean_acceptance_length"] == pytest.approx(1 + 210 / 150)
    assert windows["acceptance_rate"] == pytest.approx(210 / 450)
    sglang = by[("chat", "sglang-log")]
    # MAL only, weighted by running requests: (2.5 x 10 + 3.0 x 30) / 40; no counts, tau unknown
    assert sglang["mean_acceptance_length"] == pytest.approx(2.875)
    assert (sglang["drafted"], sglang["accepted"], sglang["acceptance_rate"], sglang["alpha"]) == (
        None,
        None,
        None,
        None,
    )


def test_by_tau_separates_control_traffic(run, store: Path) -> None:
    result = run("summary", "--db", store, "--json", "--by", "deployment,tau")
    rows = {(r["deployment"], r["source"], r["tau"]): r for r in json.loads(result.stdout)["rows"]}
    assert list(rows[("chat", "trace", 4)])[-1] == "tau"
    control = rows[("chat", "trace", 0)]
    assert (control["requests"], control["verify_steps"], control["drafted"]) == (1, 0, 0)
    assert control["mean_acceptance_length"] is None and control["alpha"] is None
    spec = rows[("chat", "trace", 4)]
    assert spec["mean_acceptance_length"] == pytest.approx(1 + 14 / 6)
    assert spec["alpha"] == pytest.approx(alpha_from_mal(1 + 14 / 6, 4))


def test_by_rejects_columns_outside_the_allow_list(run, store: Path) -> None:
    result = run("summary", "--db", store, "--by", "task;drop table requests")
    assert result.exit_code == 2 and "unknown column" in result.stderr
    assert run("summary", "--db", store, "--by", "prompt").exit_code == 2


def test_terminal_table_and_missing_store(run, store: Path, tmp_path: Path) -> None:
    table = run("summary", "--db", store)
    assert table.exit_code == 0 and "vllm-v1-log/2025-09" in table.stdout and "2.875" in table.stdout
    missing = run("summary", "--db", tmp_path / "absent.duckdb")
    assert missing.exit_code == 4 and "no database" in missing.stderr


@settings(max_examples=15, deadline=None)
@given(alpha=st.floats(0.05, 0.95), tau=st.integers(1, 8), steps=st.integers(20, 200))
def test_alpha_recovers_the_iid_acceptance(alpha: float, tau: int, steps: int) -> None:
    """Steps whose MAL is the i.i.d. expectation (Leviathan et al. 2023 Eq. 1) give back alpha."""
    con = connect(":memory:")
    mal = expected_tokens_iid(alpha, tau)
    accepted = round((mal - 1) * steps)
    con.execute(
        "insert into requests (request_id, source, ts, deployment, tau)"
        " values ('q', 'trace', now()::timestamp, 'd', ?)",
        [tau],
    )
    # spread `accepted` over the steps: accepted // steps each, one more for the first accepted % steps
    con.execute(
        "insert into steps (request_id, step, drafted, accepted)"
        " select 'q', i, $tau, $a // $n + (i < $a % $n)::int from range($n) as t(i)",
        {"tau": tau, "a": accepted, "n": steps},
    )
    (row,) = summarize(con)
    assert row["mean_acceptance_length"] == pytest.approx(1 + accepted / steps)
    assert expected_tokens_iid(row["alpha"], tau) == pytest.approx(1 + accepted / steps, abs=1e-9)
    # rounding accepted to a whole number moves MAL by at most 1 / steps
    assert abs(expected_tokens_iid(row["alpha"], tau) - mal) <= 0.5 / steps + 1e-9
    con.close()


def test_end_to_end_through_ingest(run, tmp_path: Path) -> None:
    """A trace file through `ingest_paths`: summary and queries agree with sums over the file; audits stay empty."""
    from specdiag.ingest import ingest_paths

    def steps(pairs: list[tuple[int, int]]) -> list[dict]:
        return [{"step": i, "drafted": d, "accepted": a, "verify_ms": 10.0} for i, (d, a) in enumerate(pairs)]

    lines = [
        {
            "request_id": "a",
            "ts": 1784540000,
            "deployment": "chat",
            "target_model": "t@1",
            "draft_model": "d@1",
            "tau": 3,
            "task": "code",
            "steps": steps([(3, 3), (3, 1), (2, 0)]),
        },
        {
            "request_id": "b",
            "ts": "2026-07-20T10:00:00Z",
            "deployment": "chat",
            "target_model": "t@1",
            "draft_model": "d@1",
            "tau": 0,
            "steps": steps([(0, 0), (0, 0)]),
        },
        {
            "request_id": "c",
            "ts": "2026-07-20T10:00:01Z",
            "deployment": UNICODE_DEPLOYMENT,
            "target_model": "t@1",
            "draft_model": "d@1",
            "tau": 3,
            "prompt": "x'; drop table requests; --",
            "steps": steps([(3, 2)]),
        },
        {"event": "step", "request_id": "c", "step": 1, "drafted": 3, "accepted": 3},
    ]
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines) + "\n{broken\n")
    db = tmp_path / "e2e.duckdb"
    ingest_paths([trace], db=db, progress=False)
    rows = {
        (r["deployment"], r["source"]): r
        for r in json.loads(run("summary", "--db", db, "--json").stdout)["rows"]
    }
    chat = rows[("chat", "trace")]
    assert (chat["requests"], chat["verify_steps"], chat["drafted"], chat["accepted"]) == (2, 3, 8, 4)
    uni = rows[(UNICODE_DEPLOYMENT, "trace")]
    assert (uni["verify_steps"], uni["drafted"], uni["accepted"]) == (2, 6, 5)
    assert uni["alpha"] == pytest.approx(alpha_from_mal(1 + 5 / 2, 3))
    for name in ("audit_accepted_gt_drafted", "audit_request_totals", "audit_ledger_accounting"):
        result = run("query", name, "--db", db, "--format", "json")
        assert json.loads(result.stdout) == {"rows": []}, name
    rejects = json.loads(run("query", "rejects_by_reason", "--db", db, "--format", "json").stdout)["rows"]
    assert [(r["reason"], r["first_line"]) for r in rejects] == [("invalid_json", 6)]


def test_engine_fixtures_summarised_beside_each_other(run, tmp_path: Path) -> None:
    """Every engine format the parsers read lands in summary as its own source; audits stay empty."""
    from specdiag.ingest import ingest_paths

    fixtures = Path(__file__).resolve().parent / "fixtures" / "engines"
    if not fixtures.is_dir():
        pytest.skip("no engine fixtures in this checkout")
    db = tmp_path / "engines.duckdb"
    ingest_paths([fixtures], db=db, progress=False)
    con = connect(db, read_only=True)
    stored = set(con.execute("select distinct deployment, source from windows").fetchall())
    stored |= set(con.execute("select distinct deployment, source from requests").fetchall())
    # MAL from counts, over the records that have both counts (some engines print a record's MAL only)
    with_counts = dict(
        ((dep, src), mal)
        for dep, src, mal in con.execute(
            "select deployment, source, 1 + sum(accepted) / sum(verify_steps) from ("
            " select deployment, source, accepted, verify_steps from requests"
            " union all select deployment, source, accepted, verify_steps from windows)"
            " where accepted is not null and verify_steps > 0 group by all"
        ).fetchall()
    )
    rows = summarize(con)
    con.close()
    assert {(r["deployment"], r["source"]) for r in rows} == stored
    for r in rows:
        if (r["deployment"], r["source"]) in with_counts:
            assert r["mean_acceptance_length"] == pytest.approx(with_counts[(r["deployment"], r["source"])])
        if r["acceptance_rate"] is not None:
            assert 0 <= r["acceptance_rate"] <= 1
    for name in ("audit_accepted_gt_drafted", "audit_request_totals", "audit_ledger_accounting"):
        result = run("query", name, "--db", db, "--format", "json")
        assert json.loads(result.stdout) == {"rows": []}, name
