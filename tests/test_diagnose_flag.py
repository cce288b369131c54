"""flag: representative requests of a saved finding, as prompt records replay reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specdiag.diagnose import diagnose, flag, save_findings
from specdiag.errors import InputError, UsageError
from specdiag.store import connect
from tests.test_diagnose import fleet

RECORD_KEYS = {
    "prompt_id",
    "prompt",
    "request_id",
    "deployment",
    "tau",
    "temperature",
    "top_p",
    "finding_id",
    "why",
    "acceptance",  # the production rule, which replay reproduces when it is typical
}


@pytest.fixture
def diagnosed(db: Path) -> Path:
    fleet(db, drop={"deployment": "chat-eu", "task": "code", "hour": 30, "delta": 0.1}, requests=3000)
    con = connect(db)
    save_findings(con, diagnose(con))
    con.close()
    return db


def test_flag_picks_worst_and_typical_requests_of_the_segment(diagnosed: Path) -> None:
    con = connect(diagnosed, read_only=True)
    (finding_id,) = con.execute(
        "select finding_id from findings where kind = 'acceptance_regression'"
    ).fetchone()
    records = flag(con, finding_id=finding_id, n=6)
    assert len(records) == 6 and all(RECORD_KEYS <= set(r) for r in records)
    assert {r["deployment"] for r in records} == {"chat-eu"} and {r["finding_id"] for r in records} == {
        finding_id
    }
    rates = {}
    for r in records:
        rates[r["request_id"]] = con.execute(
            "select task, ts, accepted / drafted, tau from requests where request_id = ?", [r["request_id"]]
        ).fetchone()
    assert all(task == "code" and tau > 0 for task, _, _, tau in rates.values())
    since = con.execute("select since from findings where finding_id = ?", [finding_id]).fetchone()[0]
    assert all(ts >= since for _, ts, _, _ in rates.values())
    worst = [rates[r["request_id"]][2] for r in records if r["why"].startswith("worst")]
    typical = [rates[r["request_id"]][2] for r in records if r["why"].startswith("typical")]
    assert len(worst) == 3 and max(worst) < min(typical)
    assert all(r["prompt"].startswith("prompt chat-eu") for r in records)


def test_flag_by_kind_and_errors(diagnosed: Path) -> None:
    con = connect(diagnosed, read_only=True)
    assert flag(con, kind="acceptance_regression", n=2)
    with pytest.raises(InputError, match="not in the store"):
        flag(con, finding_id=999)
    with pytest.raises(UsageError, match="unknown finding kind"):  # exit 2, as any usage error
        flag(con, kind="slow")
    with pytest.raises(UsageError, match="exactly one"):
        flag(con)


def test_flag_cli_writes_jsonl(run, diagnosed: Path, tmp_path: Path) -> None:
    out = tmp_path / "prompts.jsonl"
    result = run("flag", "--db", diagnosed, "--kind", "acceptance_regression", "-n", "4", "--out", out)
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 4 and "4 prompt records" in result.stderr
    missing = run("flag", "--db", diagnosed, "--finding", "999", "--out", out)
    assert missing.exit_code == 3 and missing.stderr.startswith("error: finding 999")


def test_flag_refuses_segment_fields_outside_the_allow_list(diagnosed: Path) -> None:
    con = connect(diagnosed)
    con.execute(
        "insert into findings values (99, now(), 'acceptance_regression', 'chat-eu', ?, 'low', 's', '{}', null)",
        ['{"task = task or 1=1 --": "x"}'],
    )
    with pytest.raises(InputError, match="cannot filter on segment field"):
        flag(con, finding_id=99)


def test_flag_binds_segment_values(diagnosed: Path) -> None:
    con = connect(diagnosed)
    con.execute(
        "insert into findings values (98, now(), 'acceptance_regression', 'chat-eu', ?, 'low', 's', '{}', null)",
        ["{\"task\": \"code' or '1'='1\"}"],
    )
    assert flag(con, finding_id=98) == []


def test_flag_picks_a_tau_findings_requests_at_its_current_tau(db: Path) -> None:
    """After a planned change from tau 4 to tau 12, a tau_too_high finding judges tau 12 (its current_tau): its
    records and the median they are typical of come from tau 12 requests, not from the tau it left."""
    con = connect(db)
    for i in range(40):
        tau, accepted = (4, 20 + i % 5) if i < 20 else (12, 10 + i % 5)
        con.execute(
            "insert into requests (request_id, source, ts, deployment, tau, verify_steps, drafted, accepted, prompt)"
            " values (?, 'trace', timestamp '2026-03-02' + to_minutes(?), 'dep', ?, 10, 10 * ?, ?, 'p')",
            [f"r{i:02d}", i, tau, tau, accepted],
        )
    con.execute(
        "insert into findings values (1, now(), 'tau_too_high', 'dep', '{}', 'high', 's', ?, null)",
        [json.dumps({"current_tau": 12, "recommended_tau": 3})],
    )
    records = flag(con, finding_id=1, n=6)
    assert len(records) == 6 and {r["tau"] for r in records} == {12}
    # tau 12 requests accept 0.10 to 0.14, the tau 4 ones before them 0.5 to 0.6
    assert all("segment median 0.1" in r["why"] for r in records)
