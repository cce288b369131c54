"""The report of a wide store: many deployments, findings and recommendations. Charts draw the busiest deployments
and pool the rest into one series, the page says what was pooled or left out, and reading the store takes the same
queries however many deployments it holds."""

from __future__ import annotations

import html
import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from specdiag import report as report_pkg
from specdiag.report import data
from specdiag.store import connect

T0 = datetime(2026, 3, 2)
CAPS = {"MAX_DEPLOYMENTS": 3, "MAX_MARKERS": 4, "MAX_FINDINGS": 5}


def fill_wide(con: duckdb.DuckDBPyConnection, deployments: int, findings: int = 0) -> None:
    """``deployments`` request deployments over two days, dep-i with 10 + i requests of 2 timed steps (so the
    busiest are the highest numbered), one engine-only deployment of 120 drafted tokens, and ``findings`` findings (every 3rd high)."""
    con.execute(
        """
        insert into requests (request_id, source, ts, deployment, tau, temperature, batch_size, quality,
                              shadow_match, verify_steps, drafted, accepted, draft_ms, verify_ms)
        select 'r' || d || '-' || k, 'trace', ?::timestamp + to_seconds(k * 3600 % 172800), 'dep-' || d, 4, 0.7,
               1 + k % 3, 0.8 + 0.01 * (d % 7), k % 4 <> 0, 2, 8, 4 + (d + k) % 4, 4.0, 40.0 + k % 3
        from range(?) a(d), range(50) b(k) where k < 10 + d
        """,
        [T0, deployments],
    )
    con.execute(
        """
        insert into steps (request_id, step, drafted, accepted, draft_ms, verify_ms, batch_size, ts)
        select r.request_id, s, 4, case when s = 0 then 4 else r.accepted - 4 end, 2.0,
               20.0 + s + r.batch_size, r.batch_size, r.ts
        from requests r, range(2) t(s)
        """
    )
    con.execute(
        """
        insert into windows (source, deployment, end_ts, tau, verify_steps, drafted, accepted, accepted_per_position)
        select 'vllm', 'engine-only', ?::timestamp + to_seconds(h * 3600), 3, 10, 30, 13, [8.0, 4.0, 1.0]
        from range(4) t(h)
        """,
        [T0],
    )
    for i in range(1, findings + 1):
        con.execute(
            "insert into findings values (?, ?, 'acceptance_regression', ?, '{}', ?, ?, ?, ?)",
            [i, T0, f"dep-{i % deployments}", "high" if i % 3 == 0 else "medium", f"finding {i}",
             json.dumps({"config_changes": []}), T0 + timedelta(hours=i % 40)],
        )  # fmt: skip


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("wide") / "wide.duckdb"
    con = connect(db)
    fill_wide(con, 12, findings=30)
    con.close()
    return db


@pytest.fixture
def caps(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CAPS.items():
        monkeypatch.setattr(data, name, value)


def _values(spec: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Every inline dataset of a chart spec (top level and layers)."""
    out = [spec["data"]["values"]] if "values" in spec.get("data", {}) else []
    for layer in spec.get("layer", []):
        out += _values(layer)
    return out


def test_wide_store_charts_stay_within_their_caps_and_the_page_says_what_was_pooled(
    wide: Path, caps: None, tmp_path: Path
) -> None:
    con = connect(wide, read_only=True)
    context, chart_list = report_pkg.build(con)
    specs = {c["id"]: c["spec"] for c in chart_list}
    assert set(specs) == {"acceptance", "positions", "speedup", "stages", "quality"}
    other = "other (10 deployments)"  # 13 deployments: the 3 busiest drawn, 10 pooled
    other_requests = "other (9 deployments)"  # stage times and quality: the 12 with request records
    for chart, pool in (("acceptance", other), ("positions", other), ("stages", other_requests),
                        ("quality", other_requests)):  # fmt: skip
        series = {r["deployment"] for r in _values(specs[chart])[0]}
        assert len(series) <= CAPS["MAX_DEPLOYMENTS"] + 1, chart
        assert pool in series, chart
    # the busiest by drafted tokens: dep-11, dep-10, dep-9 (8 x 21, 20 and 19); engine-only's 120 is pooled
    assert {r["deployment"] for r in _values(specs["acceptance"])[0]} == {"dep-11", "dep-10", "dep-9", other}
    speedup_labels = {r["label"] for r in _values(specs["speedup"])[0]}
    assert speedup_labels == {"dep-11", "dep-10", "dep-9"}
    markers = [r for values in _values(specs["acceptance"])[1:] for r in values]
    assert 0 < len(markers) <= 2 * CAPS["MAX_MARKERS"]  # each marker is a rule and a label
    assert len(context["findings"]) == CAPS["MAX_FINDINGS"]
    assert {f["severity"] for f in context["findings"]} == {"high"}  # the most severe are kept
    # every recommendation stays in the table; nothing is dropped without a word
    assert len(context["recommendations"]) == 12
    pooled_share = 100 * data.chart_scope(con).pooled_drafted
    out = tmp_path / "r.html"
    report_pkg.write_report(con, out)
    page = out.read_text(encoding="utf-8")
    notes = [html.unescape(n) for n in re.findall(r'<p class="note"[^>]*>(.*?)</p>', page)]
    assert len(notes) == 5
    assert any(n.startswith("Stage-time and quality charts draw the 3 deployments with the most drafted tokens (by "
                            'their request records) one by one; the other 9') for n in notes)  # fmt: skip
    assert any("5 most severe of 30 findings (10 high, 20 medium)" in n for n in notes)
    assert any(f'the other 10 ({pooled_share:.1f}% of drafted tokens) are pooled into one series, "{other}"' in n
               for n in notes)  # fmt: skip
    assert any("the other 9 are in the Recommendations table" in n for n in notes)
    assert any(re.search(rf"marks {CAPS['MAX_MARKERS']} of \d+ findings", n) for n in notes)


def test_pooled_series_is_the_sum_of_its_deployments(wide: Path, caps: None) -> None:
    con = connect(wide, read_only=True)
    scope = data.chart_scope(con)
    assert scope.drawn == ("dep-11", "dep-10", "dep-9") and scope.pooled == 10
    width = data.bucket_seconds(con)
    pooled = [r for r in data.acceptance_over_time(con, width, scope) if r["deployment"] == scope.other]
    each = [r for r in data.acceptance_over_time(con, width) if r["deployment"] not in scope.drawn]
    assert sum(r["drafted"] for r in pooled) == sum(r["drafted"] for r in each)
    for r in pooled:
        same = [e for e in each if e["ts"] == r["ts"]]
        assert r["acceptance_rate"] == pytest.approx(
            sum(e["accepted"] for e in same) / sum(e["drafted"] for e in same)
        )
    positions = {
        r["position"]: r for r in data.position_acceptance(con, scope) if r["deployment"] == scope.other
    }
    apart = [r for r in data.position_acceptance(con) if r["deployment"] not in scope.drawn]
    for pos, r in positions.items():
        assert r["eligible"] == sum(a["eligible"] for a in apart if a["position"] == pos)
        assert r["reached"] == sum(a["reached"] for a in apart if a["position"] == pos)
    tokens = {
        r["batch_bucket"]: r["tokens"]
        for r in data.stage_time_by_batch(con, scope)
        if r["deployment"] == scope.other
    }
    apart_tokens: dict[str, float] = {}
    for r in data.stage_time_by_batch(con):
        if r["deployment"] not in scope.drawn and r["stage"] == "draft":
            apart_tokens[r["batch_bucket"]] = apart_tokens.get(r["batch_bucket"], 0) + r["tokens"]
    assert tokens == apart_tokens


def test_a_narrow_store_is_drawn_in_full_without_notes(db: Path, tmp_path: Path) -> None:
    con = connect(db)
    fill_wide(con, 2, findings=3)
    scope = data.chart_scope(con)
    assert scope.other is None and set(scope.drawn) == {"dep-0", "dep-1", "engine-only"}
    width = data.bucket_seconds(con)
    assert data.acceptance_over_time(con, width, scope) == data.acceptance_over_time(con, width)
    assert data.quality_over_time(con, width, scope) == data.quality_over_time(con, width)
    assert data.position_acceptance(con, scope) == data.position_acceptance(con)
    assert data.stage_time_by_batch(con, scope) == data.stage_time_by_batch(con)
    context, _ = report_pkg.build(con)
    assert context["chart_notes"] == [] and context["findings_note"] is None and len(context["findings"]) == 3
    out = tmp_path / "r.html"
    report_pkg.write_report(con, out)
    assert 'class="note"' not in out.read_text(encoding="utf-8")


class CountingConnection:
    """A DuckDB connection that counts the statements run through it."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con, self.statements = con, 0

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        self.statements += 1
        return self.con.execute(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.con, name)


def test_reading_the_store_takes_the_same_queries_however_many_deployments(tmp_path: Path) -> None:
    counts = []
    for deployments in (4, 16):
        con = connect(tmp_path / f"s{deployments}.duckdb")
        fill_wide(con, deployments, findings=deployments)
        counting = CountingConnection(con)
        report_pkg.build(counting)  # type: ignore[arg-type]
        counts.append(counting.statements)
        con.close()
    assert counts[0] == counts[1]


def test_time_buckets_stay_within_the_cap_over_a_decade(db: Path) -> None:
    con = connect(db)
    con.execute(
        """
        insert into requests (request_id, source, ts, deployment, tau)
        select 'r' || i, 'trace', timestamp '2015-01-01' + to_days(i), 'd', 4 from range(3700) t(i)
        """
    )
    width = data.bucket_seconds(con)
    assert width % (7 * 86400) == 0
    assert 3699 * 86400 / width <= data.MAX_BUCKETS


def test_markers_keep_the_most_severe_of_the_drawn_deployments() -> None:
    found = [
        {"finding_id": i, "kind": "k", "deployment": dep, "summary": "", "since": T0 + timedelta(hours=10 - i),
         "evidence": {}}
        for i, dep in enumerate(["a", "b", None, "a", "a"], start=1)
    ]  # fmt: skip
    marks = data.timeline_markers(found, drawn=["a"], limit=2)
    assert [m["label"] for m in marks] == ["#3 k", "#1 k"]  # sorted by time; #2 is not drawn, #4 and #5 cut
    assert len(data.timeline_markers(found)) == 5


def test_engine_only_deployments_do_not_crowd_the_request_charts(db: Path, caps: None) -> None:
    """Stage times and quality come from request records: when the busiest deployments are engine-only, those
    charts still draw the busiest deployments that have requests, instead of one pooled series."""
    con = connect(db)
    fill_wide(con, 5)
    con.execute(
        """
        insert into windows (source, deployment, end_ts, tau, verify_steps, drafted, accepted, accepted_per_position)
        select 'vllm', 'engine-' || e, ?::timestamp + to_seconds(h * 3600), 3, 1000, 3000, 1300, [800.0, 400.0, 100.0]
        from range(4) a(e), range(4) b(h)
        """,
        [T0],
    )
    context, chart_list = report_pkg.build(con)
    con.close()
    specs = {c["id"]: c["spec"] for c in chart_list}
    assert {r["deployment"] for r in _values(specs["acceptance"])[0]} == {
        "engine-0", "engine-1", "engine-2", "other (7 deployments)"
    }  # fmt: skip
    for chart in ("stages", "quality"):
        assert {r["deployment"] for r in _values(specs[chart])[0]} == {"dep-4", "dep-3", "dep-2",
                                                                        "other (2 deployments)"}, chart  # fmt: skip
