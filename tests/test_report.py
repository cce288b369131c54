"""The report: what each section shows for a small store filled by hand, and that untrusted text stays text."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from specdiag import report as report_pkg
from specdiag.report import data
from specdiag.store import connect

# Log text an attacker controls: each would run script if it reached the page unescaped.
HOSTILE_PROMPT = "</script><script>window.__pwned=1;document.title='pwned'</script>"
HOSTILE_OUTPUT = "<img src=x onerror=\"window.__pwned=2;document.title='pwned'\">"
HOSTILE_DEPLOYMENT = "chat</script><img src=x onerror=window.__pwned=3>\u2028x"
T0 = datetime(2026, 3, 2, 0, 0)


def fill_store(con: duckdb.DuckDBPyConnection, hostile: bool = True) -> None:
    """Two deployments over two days, hourly requests with 3 verify steps each (tau 4); acceptance on 'chat-b'
    drops after 24 h. One finding, one replay run with four drafted tokens, two rejected lines."""
    dep_b = HOSTILE_DEPLOYMENT if hostile else "chat-b"
    req_rows, step_rows = [], []
    for h in range(48):
        ts = T0 + timedelta(hours=h)
        for dep in ("chat-a", dep_b):
            rid = f"{dep[:6]}-{h}"
            accepted = [4, 2, 0] if (dep == dep_b and h >= 24) else [4, 4, 3]
            batch = 1 if h % 2 == 0 else 8
            for i, acc in enumerate(accepted):
                step_rows.append((rid, i, 4, acc, 2.0, 10.0 + batch, batch, ts))
            req_rows.append(
                (
                    rid,
                    "trace",
                    ts,
                    dep,
                    4,
                    0.7,
                    HOSTILE_PROMPT if hostile else "hello",
                    HOSTILE_OUTPUT if hostile else "world",
                    batch,
                    0.9 if h < 24 else 0.8,
                    h % 5 != 0,
                    3,
                    12,
                    sum(accepted),
                    6.0,
                    30.0 + 3 * batch,
                )
            )
    request_columns = ["request_id", "source", "ts", "deployment", "tau", "temperature", "prompt", "output",
                       "batch_size", "quality", "shadow_match", "verify_steps", "drafted", "accepted", "draft_ms",
                       "verify_ms"]  # fmt: skip
    step_columns = ["request_id", "step", "drafted", "accepted", "draft_ms", "verify_ms", "batch_size", "ts"]
    con.register("new_requests", pl.DataFrame(req_rows, schema=request_columns, orient="row"))
    con.register("new_steps", pl.DataFrame(step_rows, schema=step_columns, orient="row"))
    con.execute("insert into requests by name select * from new_requests")
    con.execute("insert into steps by name select * from new_steps")
    con.execute(
        "insert into findings values (1, ?, 'acceptance_regression', ?, ?, 'high', ?, ?, ?)",
        [
            T0 + timedelta(days=2),
            dep_b,
            json.dumps({"task": HOSTILE_OUTPUT if hostile else "code"}),
            "acceptance on " + dep_b + " dropped from 0.92 to 0.50",
            json.dumps(
                {
                    "before": 0.92,
                    "after": 0.5,
                    "note": HOSTILE_PROMPT if hostile else "",
                    "config_changes": [
                        {"setting": "draft_model", "before": "d1", "after": "d2", "at": "2026-03-03T00:10:00"}
                    ],
                }
            ),
            T0 + timedelta(hours=24),
        ],
    )
    con.execute(
        """insert into replay_runs (run_id, prompt_id, request_id, finding_id, created_at, target, draft, tau,
           temperature, steps, drafted, accepted, acceptance_rate, mean_acceptance_length, speedup,
           matches_target_only, output_text) values
           ('run1', 'p1', ?, 1, ?, 'target-m', 'draft-m', 4, 0.7, 1, 4, 2, 0.5, 3.0, 1.4, true, ?)""",
        [f"{dep_b[:6]}-30", T0 + timedelta(days=2), HOSTILE_OUTPUT if hostile else "out"],
    )
    tokens = ["Hello", HOSTILE_PROMPT if hostile else " wor", "ld", "!"]
    for pos, (text, acc, p) in enumerate(zip(tokens, [True, True, False, False], [0.9, 0.8, 0.1, 0.05])):
        con.execute(
            "insert into replay_tokens values ('run1', 'p1', 0, ?, ?, ?, 0.5, ?, ?, 1.0, 0.2)",
            [pos, 100 + pos, text, p, acc],
        )
    con.execute(
        "insert into rejects values ('f1', 'logs/a.jsonl', 7, 120, 'invalid_json', ?, ?)",
        ["Expecting value", HOSTILE_PROMPT if hostile else "{"],
    )
    con.execute("insert into rejects values ('f1', 'logs/a.jsonl', 9, 300, 'missing_field', 'ts', '{}')")


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("filled") / "store.duckdb"
    con = connect(db)
    fill_store(con)
    con.close()
    return db


@pytest.fixture(scope="module")
def page(filled: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The report of the filled store, written once with PNGs (rendering is the slow part)."""
    tmp = tmp_path_factory.mktemp("page")
    con = connect(filled, read_only=True)
    written = report_pkg.write_report(con, tmp / "r.html", png_dir=tmp / "png")
    con.close()
    assert written[0] == tmp / "r.html"
    assert {p.name for p in written[1:]} == {
        f"{c}.png" for c in ("acceptance", "positions", "speedup", "stages", "quality")
    }
    for p in written[1:]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return written[0].read_text(encoding="utf-8")


def test_acceptance_over_time_shows_the_drop(filled: Path) -> None:
    con = connect(filled, read_only=True)
    width = data.bucket_seconds(con)
    # 48 requests per deployment over 47 h: daily buckets keep >= 20 requests per deployment and bucket
    assert width == 86400
    series = data.acceptance_over_time(con, width)
    by_dep = {}
    for r in series:
        by_dep.setdefault(r["deployment"], []).append(r)
    assert by_dep["chat-a"][0]["acceptance_rate"] == pytest.approx(11 / 12)
    late = [r for r in by_dep[HOSTILE_DEPLOYMENT] if r["ts"] >= T0 + timedelta(hours=24)]
    assert {round(r["acceptance_rate"], 6) for r in late} == {0.5}
    assert late[0]["mean_acceptance_length"] == pytest.approx(1 + 6 / 3)


def test_position_acceptance_is_conditional(filled: Path) -> None:
    con = connect(filled, read_only=True)
    rows = {(r["deployment"], r["position"]): r for r in data.position_acceptance(con)}
    # chat-a: steps accept 4, 4, 3 of 4 -> positions 1..3 always accepted, position 4 in 2 of 3 steps.
    assert rows[("chat-a", 1)]["cond_alpha"] == 1.0
    assert rows[("chat-a", 4)]["cond_alpha"] == pytest.approx(2 / 3)
    assert rows[("chat-a", 4)]["eligible"] == 48 * 3
    # chat-b: 24 h of (4,4,3) and 24 h of (4,2,0). Position 1: reached by all but the 0-steps.
    b1 = rows[(HOSTILE_DEPLOYMENT, 1)]
    assert b1["reached"] == 48 * 3 - 24 and b1["eligible"] == 48 * 3
    # Position 3 is conditional on positions 1-2: eligible = steps with accepted >= 2.
    b3 = rows[(HOSTILE_DEPLOYMENT, 3)]
    assert b3["eligible"] == 24 * 3 + 24 * 2 and b3["reached"] == 24 * 3 + 24
    assert b3["ci_low"] < b3["cond_alpha"] < b3["ci_high"]


def test_position_acceptance_from_engine_windows(db: Path) -> None:
    con = connect(db)
    # 100 verify steps; 80 accepted the first token, 40 the second, 10 the third.
    con.execute(
        "insert into windows (source, deployment, end_ts, tau, verify_steps, drafted, accepted, accepted_per_position)"
        " values ('vllm', 'eng', ?, 3, 100, 300, 130, [80, 40, 10])",
        [T0],
    )
    rows = data.position_acceptance(con)
    assert [round(r["cond_alpha"], 6) for r in rows] == [0.8, 0.5, 0.25]


def test_acceptance_ratios_use_records_with_both_counts(db: Path) -> None:
    """As summary and the glossary: an engine per-request record that printed drafted but not accepted (or no verify
    steps) is left out of the ratio that needs the missing count (the chart said 0.25 and MAL 2.5 for 0.5 and 3)."""
    con = connect(db)
    for i, (accepted, steps) in enumerate(((20, 10), (None, 10), (20, None), (None, None))):
        con.execute(
            "insert into requests (request_id, source, ts, deployment, tau, verify_steps, drafted, accepted, quality)"
            " values (?, 'vllm-request', ?, 'eng', 4, ?, 40, ?, 0.9)",
            [f"r{i}", T0 + timedelta(minutes=i), steps, accepted],
        )
    (row,) = data.acceptance_over_time(con, 86400)
    assert row["acceptance_rate"] == pytest.approx(0.5)
    assert row["mean_acceptance_length"] == pytest.approx(3.0)
    quality = {r["metric"]: r["value"] for r in data.quality_over_time(con, 86400)}
    assert quality["acceptance_rate"] == pytest.approx(0.5)


def test_engine_windows_of_a_traced_deployment_are_not_counted_twice(db: Path) -> None:
    """A deployment with a trace and the engine's scrapes (and one logged by two engine sources) is read once, as
    diagnose reads it: the charts doubled its drafted tokens and every per-position count (a too narrow interval)."""
    con = connect(db)
    con.execute(
        "insert into requests (request_id, source, ts, deployment, tau, verify_steps, drafted, accepted)"
        " values ('r1', 'trace', ?, 'both', 3, 100, 300, 130)",
        [T0],
    )
    con.execute(
        "insert into steps (request_id, step, drafted, accepted) select 'r1', i, 3, case when i < 10 then 3"
        " when i < 40 then 2 when i < 80 then 1 else 0 end from range(100) as t(i)"
    )
    window = (
        "insert into windows (source, deployment, end_ts, tau, verify_steps, drafted, accepted, accepted_per_position)"
        " values (?, ?, ?, 3, 100, 300, 130, [80, 40, 10])"
    )
    con.execute(window, ["prometheus/vllm-v1", "both", T0])
    for i, source in enumerate(("prometheus/vllm-v1", "prometheus/vllm-v1", "vllm-v1-log/2025-09")):
        con.execute(window, [source, "engines", T0 + timedelta(minutes=i)])
    rows = {r["deployment"]: r for r in data.acceptance_over_time(con, 86400)}
    assert (rows["both"]["drafted"], rows["both"]["accepted"]) == (300, 130)
    assert (rows["engines"]["drafted"], rows["engines"]["accepted"]) == (600, 260)  # the scrapes, not the log
    positions = {(r["deployment"], r["position"]): r for r in data.position_acceptance(con)}
    assert positions[("both", 1)]["eligible"] == 100 and positions[("both", 1)]["reached"] == 80
    assert positions[("engines", 1)]["eligible"] == 200 and positions[("engines", 3)]["reached"] == 20


def test_header_counts_deployments_and_times_of_engine_windows_too(db: Path) -> None:
    """A store of engine logs only has deployments and a time range (the header said "deployments 0")."""
    con = connect(db)
    for i, dep in enumerate(("eng-a", "eng-b", "eng-a")):
        con.execute(
            "insert into windows (source, deployment, end_ts, tau, verify_steps, drafted, accepted)"
            " values ('vllm', ?, ?, 3, 100, 300, 130)",
            [dep, T0 + timedelta(hours=i)],
        )
    head = data.ingest_summary(con)
    assert (head["deployments"], head["first_ts"], head["last_ts"]) == (2, T0, T0 + timedelta(hours=2))


def test_timeline_marks_findings_and_config_changes(filled: Path) -> None:
    con = connect(filled, read_only=True)
    marks = data.timeline_markers(data.findings(con))
    assert [(m["what"], m["label"], m["since"]) for m in marks] == [
        ("finding", "#1 acceptance_regression", T0 + timedelta(hours=24)),
        ("config change", "draft_model d1 -> d2", T0 + timedelta(hours=24, minutes=10)),
    ]
    assert [m["lane"] for m in marks] == [0, 1]


def test_stage_time_per_emitted_token(filled: Path) -> None:
    con = connect(filled, read_only=True)
    rows = {(r["deployment"], r["batch_bucket"], r["stage"]): r for r in data.stage_time_by_batch(con)}
    # chat-a steps emit 5, 5, 4 tokens; draft 2 ms and verify 10 + B ms per step.
    assert rows[("chat-a", "1", "draft")]["ms_per_token"] == pytest.approx(6 / 14)
    assert rows[("chat-a", "8-15", "verify")]["ms_per_token"] == pytest.approx(3 * 18 / 14)
    assert data.batch_bucket(1) == "1" and data.batch_bucket(5) == "4-7" and data.batch_bucket(16) == "16-31"


def test_quality_series_pairs_acceptance_with_quality(filled: Path) -> None:
    con = connect(filled, read_only=True)
    series = data.quality_over_time(con, 86400)
    metrics = {(r["deployment"], r["ts"].day, r["metric"]): r["value"] for r in series}
    assert metrics[("chat-a", 2, "quality")] == pytest.approx(0.9)
    assert metrics[("chat-a", 3, "quality")] == pytest.approx(0.8)
    assert metrics[(HOSTILE_DEPLOYMENT, 3, "acceptance_rate")] == pytest.approx(0.5)
    assert 0 < metrics[("chat-a", 2, "shadow_match_rate")] < 1


def test_report_is_self_contained_and_escapes_log_text(page: str) -> None:
    # No network: no element outside the inlined scripts loads anything (URLs inside the bundle's code are not
    # requests; the browser test checks that none is made), and the CSP forbids requests anyway.
    markup = re.sub(r"(<script[^>]*>).*?</script>", r"\1</script>", page, flags=re.S)
    assert not re.search(r"<(script|link|img|iframe|object|embed)[^>]+(src|href|data)=", markup, re.I)
    assert "default-src 'none'" in page
    # Every chart with data is embedded.
    for chart in ("acceptance", "positions", "speedup", "stages", "quality"):
        assert f'id="spec-{chart}"' in page
    # The hostile strings never appear raw; they appear as escaped text in HTML and \u-escaped in JSON.
    for hostile in (HOSTILE_PROMPT, HOSTILE_OUTPUT, HOSTILE_DEPLOYMENT):
        assert hostile not in page
    assert "&lt;/script&gt;&lt;script&gt;window.__pwned=1" in page
    assert "&lt;img src=x onerror=" in page
    assert page.count("</script>") == page.count("<script")  # only the report's own script elements
    # Chart JSON decodes back to the original deployment name.
    spec_text = re.search(r'id="spec-acceptance">(.*?)</script>', page, re.S).group(1)  # type: ignore[union-attr]
    for char in "<>&\u2028\u2029":
        assert char not in spec_text
    spec = json.loads(spec_text)
    assert HOSTILE_DEPLOYMENT in json.dumps(spec, ensure_ascii=False)


def test_report_tables(filled: Path, page: str) -> None:
    con = connect(filled, read_only=True)
    context, _charts = report_pkg.build(con)
    assert [f["finding_id"] for f in context["findings"]] == [1]
    assert [(r["reason"], r["lines"]) for r in context["rejects"]] == [
        ("invalid_json", 1),
        ("missing_field", 1),
    ]
    [run] = context["replays"]
    assert [t["accepted"] for t in run["tokens"]] == [True, True, False, False]
    assert run["prompt"] == HOSTILE_PROMPT
    assert {r["deployment"] for r in context["recommendations"]} == {"chat-a", HOSTILE_DEPLOYMENT}
    # four replayed tokens and the two legend swatches
    assert len(re.findall(r'class="tok[ "]', page)) == 4 + 2
    assert page.count('class="tok rejected') == 2 + 1  # the two rejected tokens are struck through
    assert "invalid_json" in page and "logs/a.jsonl:7" in page
    assert "#1 acceptance_regression" in page  # the finding's marker on the acceptance chart
    assert "draft_model d1 -\\u003e d2" in page  # and the configuration change (JSON-escaped '>')


def test_empty_store_gives_a_report_that_says_so(db: Path, tmp_path: Path) -> None:
    con = connect(db)
    out = tmp_path / "empty.html"
    report_pkg.write_report(con, out)
    page = out.read_text(encoding="utf-8")
    assert "No findings in the store" in page
    assert "No data for: Acceptance over time" in page
    assert 'id="spec-' not in page


def test_report_command(run, filled: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmd.html"
    result = run("report", "--db", filled, "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"written": [str(out)]}
    assert out.read_text(encoding="utf-8").startswith("<!doctype html>")


def test_report_command_errors_are_one_line(run, tmp_path: Path) -> None:
    missing = run("report", "--db", tmp_path / "none.duckdb", "--out", tmp_path / "r.html")
    assert missing.exit_code == 4 and missing.stderr.startswith("error: no database")
    con = connect(tmp_path / "s.duckdb")
    con.close()
    bad_out = run("report", "--db", tmp_path / "s.duckdb", "--out", tmp_path / "nodir" / "r.html")
    assert bad_out.exit_code == 3 and "does not exist" in bad_out.stderr
    assert "Traceback" not in bad_out.stderr
