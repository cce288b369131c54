"""Named queries: headers, parameter binding (and an injection attempt), golden results on a small awkward store."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specdiag import queries
from specdiag.errors import InputError, UsageError
from specdiag.store import connect

H = datetime(2026, 7, 20, 10, 5)
H2 = datetime(2026, 7, 20, 11, 30)
UNICODE_DEPLOYMENT = "ünïcode-部署"

# (request_id, source, ts, deployment, task, tau, steps: [(drafted, accepted, draft_ms, verify_ms, batch)])
REQUESTS = [
    (
        "r1",
        "trace",
        H,
        "chat",
        "code",
        4,
        [(4, 4, 4.0, 20.0, 8), (4, 2, 4.0, 20.0, 8), (4, 0, 4.0, 20.0, 8), (3, 3, 3.0, 19.0, 9)],
    ),
    ("r2", "trace", H, "chat", None, 4, [(4, 1, 4.0, 10.0, 3), (4, 4, 4.0, 10.0, 3)]),
    ("r3", "trace", H, "chat", "code", 0, [(0, 0, None, 9.0, 8), (0, 0, None, 9.0, 8), (0, 0, None, 9.0, 8)]),
    ("r4", "trace", H2, "chat", "code", 2, [(2, 2, None, None, None), (2, 1, None, None, None)]),
    ("r5", "trace", H, UNICODE_DEPLOYMENT, "数学", 3, [(3, 1, 1.0, 5.0, 1)]),
]
# an engine per-request record with totals and no steps
ENGINE_REQUEST = ("e1", "vllm-request", H, "chat", "code", 3, 10, 30, 15)
# (source, deployment, engine, end_ts, tau, verify_steps, drafted, accepted, accepted_per_position, MAL, running)
WINDOWS = [
    ("vllm-v1-log/2025-09", "chat", "0", H, 3, 100.0, 300, 150, [80.0, 50.0, 20.0], 2.5, None),
    ("vllm-v1-log/2025-09", "chat", "0", H2, 3, 50.0, 150, 60, [35.0, 20.0, 5.0], 2.2, None),
    ("sglang-log", "chat", None, H, None, None, None, None, None, 2.5, 10.0),
    ("sglang-log", "chat", None, H, None, None, None, None, None, 3.0, 30.0),
]


def build_store(path: Path) -> duckdb.DuckDBPyConnection:
    """A small store with awkward values: tau = 0 control traffic, a tau change, null task, unicode, MAL-only windows."""
    con = connect(path)
    ledger = (
        "insert into ingest_ledger (file_id, path, format, ingested_at, lines, stored_lines, requests, steps,"
        " windows, duplicates, blank, rejected, other_lines) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    con.execute(ledger, ["f1", "a.jsonl", "trace", H2, 10, 5, 5, 12, 0, 1, 1, 3, 0])
    con.execute(ledger, ["f2", "vllm.log", "vllm-v1-log", H2, 40, 3, 1, 0, 2, 0, 0, 0, 37])
    for rid, source, ts, dep, task, tau, steps in REQUESTS:
        con.execute(
            "insert into requests (request_id, source, ts, deployment, task, tau, prompt, file_id, line)"
            " values (?, ?, ?, ?, ?, ?, ?, 'f1', 1)",
            [rid, source, ts, dep, task, tau, "x'; drop table requests; --"],
        )
        for i, (d, a, dms, vms, b) in enumerate(steps):
            con.execute(
                "insert into steps (request_id, step, drafted, accepted, draft_ms, verify_ms, batch_size, ts)"
                " values (?, ?, ?, ?, ?, ?, ?, ?)",
                [rid, i, d, a, dms, vms, b, ts],
            )
    rid, source, ts, dep, task, tau, vs, dr, ac = ENGINE_REQUEST
    con.execute(
        "insert into requests (request_id, source, ts, deployment, task, tau, verify_steps, drafted, accepted, file_id)"
        " values (?, ?, ?, ?, ?, ?, ?, ?, ?, 'f2')",
        [rid, source, ts, dep, task, tau, vs, dr, ac],
    )
    for src, dep, eng, end, tau, vs, dr, ac, app, mal, running in WINDOWS:
        con.execute(
            "insert into windows (source, deployment, engine, end_ts, tau, verify_steps, drafted, accepted,"
            " accepted_per_position, mean_acceptance_length, running_requests, file_id)"
            " values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                src,
                dep,
                eng,
                end,
                tau,
                vs,
                dr,
                ac,
                app,
                mal,
                running,
                "f2" if src.startswith("vllm") else None,
            ],
        )
    for line, reason in ((3, "invalid_json"), (7, "invalid_json"), (9, "out_of_range")):
        con.execute(
            "insert into rejects values ('f1', 'a.jsonl', ?, ?, ?, ?, ?)",
            [line, line * 100, reason, f"d{line}", "{"],
        )
    return con


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by the read-only tests of this module (tests that write build their own)."""
    path = tmp_path_factory.mktemp("queries") / "store.duckdb"
    build_store(path).close()
    return path


def _rows(store: Path, name: str, **params: str) -> list[dict]:
    con = connect(store, read_only=True)
    try:
        columns, rows = queries.run_query(con, queries.find_query(name), params)
    finally:
        con.close()
    return queries.records(columns, rows)


def test_every_query_header_parses_and_declares_its_columns(store: Path) -> None:
    con = connect(store, read_only=True)
    for q in queries.list_queries():
        columns, _ = queries.run_query(con, q)
        assert q.description and q.grain
        assert columns == list(q.columns), q.name
    con.close()


def test_acceptance_by_segment_golden(store: Path) -> None:
    rows = {(r["deployment"], r["task"]): r for r in _rows(store, "acceptance_by_segment")}
    # chat/code: r1 (4 steps, 15 drafted, 9 accepted), r3 control (no verify steps), r4 (2 steps, 4, 3), e1 (10, 30, 15)
    code = rows[("chat", "code")]
    assert (code["requests"], code["control_requests"]) == (4, 1)
    assert (code["verify_steps"], code["drafted"], code["accepted"]) == (16, 49, 27)
    assert code["acceptance_rate"] == pytest.approx(27 / 49)
    assert code["mean_acceptance_length"] == pytest.approx(1 + 27 / 16)
    untagged = rows[("chat", None)]
    assert (untagged["verify_steps"], untagged["drafted"], untagged["accepted"]) == (2, 8, 5)
    uni = rows[(UNICODE_DEPLOYMENT, "数学")]
    assert uni["mean_acceptance_length"] == pytest.approx(2.0)
    assert len(rows) == 3


def test_parameter_restricts_and_injection_matches_nothing(store: Path) -> None:
    only = _rows(store, "acceptance_by_segment", deployment=UNICODE_DEPLOYMENT)
    assert [r["deployment"] for r in only] == [UNICODE_DEPLOYMENT]
    assert _rows(store, "acceptance_by_segment", deployment="x'; drop table requests; --") == []
    assert _rows(store, "acceptance_by_segment", deployment="chat' or '1'='1") == []
    con = connect(store, read_only=True)
    assert con.execute("select count(*) from requests").fetchone() == (6,)
    con.close()


def test_injection_through_the_command_changes_nothing(run, store: Path) -> None:
    result = run(
        "query",
        "acceptance_by_segment",
        "-p",
        "deployment",
        "x'; drop table requests; --",
        "--db",
        store,
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"rows": []}
    after = run("sql", "select count(*) as n from requests", "--db", store, "--format", "json")
    assert json.loads(after.stdout) == {"rows": [{"n": 6}]}


def test_acceptance_by_position_is_conditional(store: Path) -> None:
    rows = {(r["tau"], r["position"]): r for r in _rows(store, "acceptance_by_position", deployment="chat")}
    # tau 4 steps (drafted, accepted): (4,4) (4,2) (4,0) (3,3) (4,1) (4,4)
    # position 1: all 6 reached, 5 accepted; position 2: reached by accepted >= 1 -> 5, accepted >= 2 -> 4
    assert (rows[(4, 1)]["reached"], rows[(4, 1)]["accepted"]) == (6, 5)
    assert (rows[(4, 2)]["reached"], rows[(4, 2)]["accepted"]) == (5, 4)
    assert (rows[(4, 3)]["reached"], rows[(4, 3)]["accepted"]) == (4, 3)
    # position 4: only steps that drafted 4: (4,4) (4,2) (4,0) (4,1) (4,4); reached when accepted >= 3: two, both accept
    assert (rows[(4, 4)]["reached"], rows[(4, 4)]["accepted"]) == (2, 2)
    assert rows[(4, 4)]["conditional_acceptance"] == pytest.approx(1.0)
    assert rows[(4, 4)]["cumulative_acceptance"] == pytest.approx(2 / 5)
    assert (0, 1) not in rows  # control traffic drafts nothing
    assert rows[(2, 2)]["conditional_acceptance"] == pytest.approx(1 / 2)


def test_acceptance_over_time_buckets_by_hour_and_filters(store: Path) -> None:
    rows = _rows(store, "acceptance_over_time", deployment="chat")
    assert [(r["hour"], r["requests"]) for r in rows] == [
        (datetime(2026, 7, 20, 10), 4),
        (datetime(2026, 7, 20, 11), 1),
    ]
    assert rows[1]["mean_acceptance_length"] == pytest.approx(2.5)  # r4: 3 accepted in 2 steps
    late = _rows(store, "acceptance_over_time", since="2026-07-20 11:00:00")
    assert [r["hour"] for r in late] == [datetime(2026, 7, 20, 11)]


def test_latency_breakdown_per_emitted_token(store: Path) -> None:
    rows = {(r["tau"], r["batch_bucket"]): r for r in _rows(store, "latency_breakdown", deployment="chat")}
    # tau 4, batch 8..15: r1's 4 steps emit 5+3+1+4 = 13 tokens, draft 15 ms, verify 79 ms
    r = rows[(4, 8)]
    assert (r["steps"], r["emitted_tokens"]) == (4, 13)
    assert r["draft_ms_per_token"] == pytest.approx(15 / 13)
    assert r["verify_ms_per_token"] == pytest.approx(79 / 13)
    assert r["draft_share"] == pytest.approx(15 / 94)
    assert rows[(4, 2)]["steps"] == 2  # r2 at batch 3
    assert rows[(0, 8)]["verify_ms_per_token"] == pytest.approx(9.0)  # control: one token per 9 ms step
    assert rows[(0, 8)]["draft_share"] == 0
    assert all(key[0] != 2 for key in rows)  # r4's steps have no timings


def test_rejects_by_reason(store: Path) -> None:
    rows = _rows(store, "rejects_by_reason")
    assert [(r["reason"], r["rejected"], r["first_line"], r["first_detail"]) for r in rows] == [
        ("invalid_json", 2, 3, "d3"),
        ("out_of_range", 1, 9, "d9"),
    ]
    assert len(_rows(store, "rejects_by_reason", reason="out_of_range")) == 1


def test_window_acceptance_over_time_weights_mal_only_windows(store: Path) -> None:
    rows = {(r["source"], r["hour"].hour): r for r in _rows(store, "window_acceptance_over_time")}
    vllm = rows[("vllm-v1-log/2025-09", 10)]
    assert (vllm["windows"], vllm["drafted"], vllm["accepted"]) == (1, 300, 150)
    assert vllm["mean_acceptance_length"] == pytest.approx(2.5)
    sglang = rows[("sglang-log", 10)]
    assert sglang["drafted"] is None and sglang["acceptance_rate"] is None
    assert sglang["mean_acceptance_length"] == pytest.approx((2.5 * 10 + 3.0 * 30) / 40)


def test_window_acceptance_by_position_from_counts(store: Path) -> None:
    rows = {r["position"]: r for r in _rows(store, "window_acceptance_by_position")}
    # summed over the two windows: verify_steps 150, reached position 1..3 = 115, 70, 25
    assert rows[1]["conditional_acceptance"] == pytest.approx(115 / 150)
    assert rows[2]["conditional_acceptance"] == pytest.approx(70 / 115)
    assert rows[3]["conditional_acceptance"] == pytest.approx(25 / 70)
    assert rows[3]["cumulative_acceptance"] == pytest.approx(25 / 150)


def test_audits_pass_on_a_consistent_store(store: Path) -> None:
    for q in queries.list_queries():
        if q.name.startswith("audit_"):
            assert _rows(store, q.name) == [], q.name


def test_audits_catch_planted_inconsistencies(db: Path) -> None:
    store = db
    con = build_store(db)
    con.execute("update steps set accepted = 5 where request_id = 'r1' and step = 0")  # drafted 4
    con.execute("update requests set verify_steps = 3, drafted = 15, accepted = 9 where request_id = 'r1'")
    con.execute("delete from rejects where line = 9")  # the ledger still says 3 rejected
    con.close()
    bad = _rows(store, "audit_accepted_gt_drafted")
    assert [(r["table_name"], r["id"]) for r in bad] == [("steps", "r1#0")]
    totals = _rows(store, "audit_request_totals")
    # the planted totals miss the step change: verify_steps 3 != 4 and accepted 9 != 10
    assert {(r["request_id"], r["field"], r["stored"], r["from_steps"]) for r in totals} == {
        ("r1", "verify_steps", 3, 4),
        ("r1", "accepted", 9, 10),
    }
    ledger = _rows(store, "audit_ledger_accounting")
    assert [(r["file_id"], r["problem"], r["ledger_value"], r["actual_value"]) for r in ledger] == [
        ("f1", "rejected", 3, 2)
    ]


def test_header_parsing_rejects_missing_keys(tmp_path: Path) -> None:
    bad = tmp_path / "broken.sql"
    bad.write_text("-- name: broken\n-- description: x\nselect 1\n")
    with pytest.raises(InputError, match="broken.sql:1: query header lacks `-- grain:`"):
        queries.parse_header(bad, bad.read_text())
    named = tmp_path / "other.sql"
    named.write_text("-- name: wrong\n-- description: d\n-- grain: g\n-- columns: a\nselect 1 as a\n")
    with pytest.raises(InputError, match="differs from the file name"):
        queries.parse_header(named, named.read_text())


def test_header_params_and_continuations(tmp_path: Path) -> None:
    path = tmp_path / "q.sql"
    path.write_text(
        "-- name: q\n-- description: first part\n--   and the rest\n-- grain: one row\n"
        "-- params: n (integer, default 3): how many\n-- params: since (timestamp, default null = all): from\n"
        "-- columns: a\nselect coalesce(getvariable('n'), 3) as a\n"
    )
    q = queries.parse_header(path, path.read_text())
    assert q.description == "first part and the rest"
    assert [(p.name, p.type, p.default) for p in q.params] == [
        ("n", "integer", "3"),
        ("since", "timestamp", "null = all"),
    ]
    con = duckdb.connect()
    assert queries.run_query(con, q)[1] == [(3,)]
    assert queries.run_query(con, q, {"n": "7"})[1] == [(7,)]
    assert queries.run_query(con, q)[1] == [(3,)]  # variables are reset after each run
    with pytest.raises(InputError, match="not a valid integer"):
        queries.run_query(con, q, {"n": "seven"})
    with pytest.raises(InputError, match="not a valid timestamp"):
        queries.run_query(con, q, {"n": "5", "since": "yesterday"})
    assert queries.run_query(con, q)[1] == [(3,)]  # a failed run leaves no variable behind
    with pytest.raises(UsageError, match="no parameter 'm'"):
        queries.run_query(con, q, {"m": "1"})


def test_query_command_formats(run, store: Path, tmp_path: Path) -> None:
    as_csv = run("query", "rejects_by_reason", "--db", store, "--format", "csv")
    assert as_csv.exit_code == 0
    assert as_csv.stdout.splitlines()[0] == "path,reason,rejected,first_line,first_detail"
    assert as_csv.stdout.splitlines()[1] == "a.jsonl,invalid_json,2,3,d3"
    out = tmp_path / "pos.parquet"
    as_parquet = run(
        "query", "window_acceptance_by_position", "--db", store, "--format", "parquet", "--out", out
    )
    assert as_parquet.exit_code == 0, as_parquet.stderr
    assert pq.read_table(out).num_rows == 3
    table = run("query", "acceptance_by_segment", "--db", store)
    assert table.exit_code == 0 and "数学" in table.stdout


def test_query_list_and_unknown_names(run, store: Path) -> None:
    listed = run("query", "--list", "--format", "json")
    names = {q["name"] for q in json.loads(listed.stdout)["rows"]}
    assert {"acceptance_by_segment", "latency_breakdown", "audit_request_totals"} <= names
    unknown = run("query", "nope", "--db", store)
    assert unknown.exit_code == 2 and "no query named 'nope'" in unknown.stderr
    traversal = run("query", "../pyproject", "--db", store)
    assert traversal.exit_code == 2
    badparam = run("query", "rejects_by_reason", "-p", "deployment", "x", "--db", store)
    assert badparam.exit_code == 2 and "no parameter 'deployment'" in badparam.stderr


def test_sql_is_read_only_and_reports_errors_in_one_line(run, store: Path) -> None:
    write = run("sql", "delete from requests", "--db", store)
    assert write.exit_code == 3 and write.stderr.count("\n") == 1 and "read-only" in write.stderr
    copy = run("sql", f"copy (select 1) to '{store.parent / 'leak.csv'}'", "--db", store)
    assert copy.exit_code == 3 and not (store.parent / "leak.csv").exists()
    typo = run("sql", "selec 1", "--db", store)
    assert typo.exit_code == 3 and typo.stderr.startswith("error: sql:")
    missing = run("sql", "select 1", "--db", store.parent / "none.duckdb")
    assert missing.exit_code == 4


def test_sql_json_writes_every_duckdb_type_a_select_returns(run, store: Path) -> None:
    """A DECIMAL literal (2.5), an INTERVAL, a BLOB, a UUID, a TIME: JSON values, not a traceback."""
    sql = (
        "select 2.5 as d, interval 90 second as i, '\\x01\\xff'::blob as b, "
        "'4d3c0e2a-8f9b-4a0c-9d7e-1c2b3a4d5e6f'::uuid as u, time '10:00:01' as t, 10::hugeint as h"
    )
    got = run("sql", sql, "--db", store, "--format", "json")
    assert got.exit_code == 0, got.stderr
    assert json.loads(got.stdout)["rows"] == [
        {
            "d": 2.5,
            "i": 90.0,
            "b": "01ff",
            "u": "4d3c0e2a-8f9b-4a0c-9d7e-1c2b3a4d5e6f",
            "t": "10:00:01",
            "h": 10,
        }
    ]


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_output_errors_are_one_line(run, store: Path, fmt: str) -> None:
    missing = store.parent / "no-such-folder" / f"out.{fmt}"
    for argv in (("query", "rejects_by_reason"), ("sql", "select 1 as x")):
        got = run(*argv, "--db", store, "--format", fmt, "--out", missing)
        assert got.exit_code == 3 and got.stderr.startswith(f"error: {missing}: cannot write")
        assert got.stderr.count("\n") == 1
    if fmt == "parquet":  # a type Parquet has no form for
        out = store.parent / "interval.parquet"
        interval = run("sql", "select interval 1 day as i", "--db", store, "--format", fmt, "--out", out)
        assert interval.exit_code == 3 and "cannot write Parquet" in interval.stderr
    for empty in ("", " ; "):
        got = run("sql", empty, "--db", store)
        assert got.exit_code == 3 and got.stderr == "error: sql: no statement given\n"


def test_dollar_placeholders_are_bound_from_typed_variables(tmp_path: Path) -> None:
    path = tmp_path / "d.sql"
    path.write_text(
        "-- name: d\n-- description: d\n-- grain: one row\n-- params: $n (integer, positions 1..n)\n"
        "-- columns: a, b\nselect $n + 1 as a, $n is null as b\n"
    )
    q = queries.parse_header(path, path.read_text())
    assert queries.dollar_params(q.sql) == ["n"]
    con = duckdb.connect()
    assert queries.run_query(con, q, {"n": "4"})[1] == [(5, False)]
    assert queries.run_query(con, q)[1] == [(None, True)]


@pytest.mark.parametrize(
    ("value", "utc"),
    [
        ("2026-11-22T22:00+05:00", datetime(2026, 11, 22, 17, 0)),
        ("2026-11-22T22:00:00-08:00", datetime(2026, 11, 23, 6, 0)),
        ("2026-11-22T22:00Z", datetime(2026, 11, 22, 22, 0)),
        ("2026-11-22 22:00", datetime(2026, 11, 22, 22, 0)),  # no offset: UTC, as the store's times
        # a zone name: DuckDB's cast read both as 22:00 (it drops any word after the time)
        ("2026-11-22 22:00 America/New_York", datetime(2026, 11, 23, 3, 0)),
        ("2026-11-22 22:00:00 CET", datetime(2026, 11, 22, 21, 0)),
    ],
)
def test_timestamp_parameters_with_an_offset_mean_that_instant(
    tmp_path: Path, value: str, utc: datetime
) -> None:
    path = tmp_path / "t.sql"
    path.write_text(
        "-- name: t\n-- description: t\n-- grain: one row\n-- params: $since (timestamp)\n"
        "-- columns: since\nselect $since as since\n"
    )
    q = queries.parse_header(path, path.read_text())
    assert queries.run_query(duckdb.connect(), q, {"since": value})[1] == [(utc,)]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("2026-11-22 22:00 XYZ", "unknown time zone 'XYZ'"),  # DuckDB read 22:00 UTC
        ("2026-11-22 10:00 pm", "unknown time zone 'pm'"),  # DuckDB read 10:00
        ("2026-11-22 22:00+01 CET", "both an offset and a time zone name"),
    ],
)
def test_timestamp_parameters_with_an_unknown_zone_are_refused(tmp_path: Path, value: str, why: str) -> None:
    path = tmp_path / "t.sql"
    path.write_text(
        "-- name: t\n-- description: t\n-- grain: one row\n-- params: $since (timestamp)\n"
        "-- columns: since\nselect $since as since\n"
    )
    q = queries.parse_header(path, path.read_text())
    with pytest.raises(InputError, match=f"not a valid timestamp \\({why}\\)"):
        queries.run_query(duckdb.connect(), q, {"since": value})


def test_query_list_honours_out(run, tmp_path: Path) -> None:
    """--list printed to stdout whatever --out said (and a table for --format parquet)."""
    out = tmp_path / "list.csv"
    got = run("query", "--list", "--format", "csv", "--out", out)
    assert got.exit_code == 0 and got.stdout == "" and out.read_text().startswith("name,description,")
    for fmt in ("parquet", "table"):
        got = run("query", "--list", "--format", fmt, "--out", tmp_path / "list.x")
        assert got.exit_code == 2 and got.stdout == "" and not (tmp_path / "list.x").exists()


def test_duplicate_parameters_are_a_usage_error(run, store: Path) -> None:
    """The first value was dropped without a word: `-p deployment a -p deployment b` read as b alone."""
    got = run(
        "query", "acceptance_by_segment", "-p", "deployment", "chat", "-p", "deployment", "x", "--db", store
    )
    assert got.exit_code == 2 and got.stderr.startswith("error: -p deployment given more than once")


def test_an_error_in_a_later_chunk_of_the_result_is_an_sql_error(run, store: Path) -> None:
    """DuckDB raises some errors only while the rows are fetched: they were 'error: database:' with exit 4 (a
    store error), where the same error in the first chunk was 'error: sql:' with exit 3."""
    late = "select case when range >= 4999 then cast('x' || range as int) end as v from range(5000)"
    for fmt in ("table", "csv"):
        got = run("sql", late, "--db", store, "--format", fmt)
        assert got.exit_code == 3 and got.stderr.startswith("error: sql: Conversion Error"), got.stderr


def test_sql_parquet_of_a_statement_without_a_result(run, store: Path, tmp_path: Path) -> None:
    """A comment-only statement gives {"rows": []} as JSON; as Parquet it was an AttributeError traceback."""
    out = tmp_path / "none.parquet"
    got = run("sql", "/* nothing */", "--db", store, "--format", "parquet", "--out", out)
    assert got.exit_code == 0, got.stderr
    assert pq.read_table(out).num_rows == 0


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_out_never_overwrites_the_store(run, tmp_path: Path, fmt: str) -> None:
    """`--out` naming the store (or a link to it, or its WAL) replaced the store of a read-only command."""
    db = tmp_path / "store.duckdb"
    build_store(db).close()
    before = db.read_bytes()
    (tmp_path / "link.duckdb").symlink_to(db)
    for out in (db, tmp_path / "link.duckdb", tmp_path / "store.duckdb.wal"):
        for argv in (("sql", "select 1 as x"), ("query", "audit_request_totals")):
            got = run(*argv, "--db", db, "--format", fmt, "--out", out)
            assert got.exit_code == 2 and "it would be overwritten" in got.stderr, (argv, out, got.stderr)
    assert db.read_bytes() == before and not (tmp_path / "store.duckdb.wal").exists()


def test_sql_cannot_turn_on_settings_that_write_files(run, store: Path) -> None:
    """`call enable_logging(storage='file', ...)` aborted the process (SIGABRT, exit 134) under the disabled external
    access; profiling_output failed as a store error. Settings are locked, the display ones excepted."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    for statement in (
        f"call enable_logging(storage='file', storage_path='{store.parent / 'logs'}'); select 1",
        f"pragma enable_profiling='json'; set profiling_output='{store.parent / 'p.json'}'; select 1",
    ):
        done = subprocess.run(
            [sys.executable, "-m", "specdiag", "sql", statement, "--db", str(store)],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
            timeout=120,
        )
        assert done.returncode == 3 and done.stderr.startswith("error: sql:"), (done.returncode, done.stderr)
        assert "configuration has been locked" in done.stderr
    assert not (store.parent / "logs").exists() and not (store.parent / "p.json").exists()
    tz = run("sql", "set timezone = 'Europe/Berlin'; select current_setting('timezone') as tz", "--db", store,
             "--format", "csv")  # fmt: skip
    assert tz.exit_code == 0 and tz.stdout == "tz\nEurope/Berlin\n", tz.stderr


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.text(max_size=40))
def test_any_parameter_value_is_data_never_sql(store: Path, value: str) -> None:
    """Whatever text -p carries (quotes, semicolons, comments, unicode), it only selects a deployment."""
    rows = _rows(store, "acceptance_by_segment", deployment=value)
    assert all(r["deployment"] == value for r in rows)
    assert bool(rows) == (value in ("chat", UNICODE_DEPLOYMENT))


def test_request_ratios_use_only_records_with_both_counts(tmp_path: Path) -> None:
    """An engine per-request record may lack a count (an SGLang log with spec_verify_ct but no accepted): acceptance
    rate and MAL use the records that have both counts of each ratio (docs/glossary.md), as specdiag summary does."""
    con = connect(tmp_path / "partial.duckdb")
    insert = (
        "insert into requests (request_id, source, ts, deployment, tau, verify_steps, drafted, accepted)"
        " values (?, 'sglang-request', ?, 'd', 4, ?, ?, ?)"
    )
    con.execute(insert, ["full", H, 10, 40, 20])
    con.execute(insert, ["no-accepted", H, 30, None, None])  # spec_verify_ct and a MAL only
    con.execute(insert, ["no-drafted", H, 10, None, 30])
    con.close()
    path = tmp_path / "partial.duckdb"
    for name in ("acceptance_by_segment", "acceptance_over_time"):
        (row,) = _rows(path, name)
        assert (row["verify_steps"], row["drafted"], row["accepted"]) == (50, 40, 50), name  # columns sum all
        assert row["acceptance_rate"] == pytest.approx(20 / 40), name
        assert row["mean_acceptance_length"] == pytest.approx(1 + (20 + 30) / (10 + 10)), name


def test_out_dash_is_stdout(run, store: Path) -> None:
    """`--out -` means stdout, as for flag; it wrote a file named "-"."""
    res = run("sql", "select 42 as answer", "--db", store, "--format", "csv", "--out", "-")
    assert res.exit_code == 0 and res.stdout.splitlines() == ["answer", "42"]
    assert not Path("-").exists()
