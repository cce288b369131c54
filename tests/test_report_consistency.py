"""The report tells the same story as the machine outputs (`recommend --json`, the chart tooltips' fields) and the
same store gives the same page."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest

from specdiag import report as report_pkg
from specdiag.store import connect
from tests.test_report import T0, fill_store


def _spec(page: str, chart: str) -> dict:
    text = re.search(rf'id="spec-{chart}">(.*?)</script>', page, re.S).group(1)  # type: ignore[union-attr]
    return json.loads(text)


def test_engine_only_store_says_why_recommend_skipped_it(run, db: Path, tmp_path: Path) -> None:
    """Engine windows without timings: recommend skips the deployment and says why ("pass --cost C"); the report
    said "No speculative traffic to recommend tau from" instead, and dropped such deployments in mixed stores."""
    con = connect(db)
    for h in range(48):
        con.execute(
            "insert into windows (source, deployment, end_ts, tau, verify_steps, drafted, accepted)"
            " values ('vllm', 'eng', ?, 3, 100, 300, 130)",
            [T0 + timedelta(hours=h)],
        )
    con.close()
    rec = run("recommend", "--db", db, "--json")
    [skipped] = json.loads(rec.stdout)["skipped"]
    out = tmp_path / "r.html"
    assert run("report", "--db", db, "--out", out).exit_code == 0
    page = out.read_text(encoding="utf-8")
    section = page[page.index('id="recommendations"') : page.index('id="replays"')]
    assert "No speculative traffic" not in section
    assert "eng" in section and skipped["reason"] in section


def test_stage_chart_data_carries_the_tooltip_token_count(filled_db: Path, tmp_path: Path) -> None:
    """The stage chart's tooltip shows tokens:Q; the field was stripped from the data, so the tooltip was empty."""
    con = connect(filled_db, read_only=True)
    out = tmp_path / "r.html"
    report_pkg.write_report(con, out)
    spec = _spec(out.read_text(encoding="utf-8"), "stages")
    assert any(t.get("field") == "tokens" for t in spec["encoding"]["tooltip"])
    rows = {(r["deployment"], r["batch_bucket"], r["stage"]): r for r in spec["data"]["values"]}
    # chat-a, batch 1: 24 requests x 3 steps emitting 5, 5, 4 tokens
    assert rows[("chat-a", "1", "draft")]["tokens"] == 24 * 14


def test_same_store_gives_the_same_page(filled_db: Path, tmp_path: Path) -> None:
    con = connect(filled_db, read_only=True)
    pages = []
    for name in ("a.html", "b.html"):
        report_pkg.write_report(con, tmp_path / name)
        text = (tmp_path / name).read_text(encoding="utf-8")
        pages.append(re.sub(r"generated \d{4}-\d\d-\d\d \d\d:\d\d UTC", "generated -", text))
    assert pages[0] == pages[1]


def test_chart_floats_do_not_carry_summation_noise() -> None:
    """DuckDB's parallel float sums differ in the last bits from run to run; chart data is rounded to 12 digits."""
    from specdiag.report.charts import _values

    [a] = _values([{"x": 32.919531494740106}]).to_dict()["values"]
    [b] = _values([{"x": 32.9195314947401}]).to_dict()["values"]
    assert a == b


@pytest.fixture(scope="module")
def filled_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("filled") / "store.duckdb"
    con = connect(db)
    fill_store(con, hostile=False)
    con.close()
    return db
