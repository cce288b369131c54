"""`specdiag demo --quick` end to end: every step runs, the store holds what each step wrote, the report shows it.

Training the built-in demo pair takes minutes, so the test replays on a tiny pair built with replay's own recipe
(`--models DIR`, DIR/target and DIR/draft): the pipeline is the same, only the models are smaller.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

pytest.importorskip("torch")

TINY_RECIPE = dict(target_steps=2, draft_steps=2, batch_size=2, seq_len=32, corpus_bytes=50_000)


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from replay.demo_pair import ModelShape, Recipe, train_demo_pair

    out = tmp_path_factory.mktemp("pair")
    recipe = Recipe(
        target=ModelShape(hidden=32, layers=1, heads=2, intermediate=64),
        draft=ModelShape(hidden=16, layers=1, heads=1, intermediate=32),
        **TINY_RECIPE,  # type: ignore[arg-type]
    )
    train_demo_pair(out, recipe)
    return out


@pytest.fixture(scope="module")
def demo_run(tiny_pair: Path, tmp_path_factory: pytest.TempPathFactory):
    from click.testing import CliRunner

    from tests.conftest import _entry

    out = tmp_path_factory.mktemp("demo") / "out"
    result = CliRunner().invoke(
        _entry,
        ["demo", "--quick", "--out", str(out), "--models", str(tiny_pair), "--json"],
        catch_exceptions=False,
    )
    return result, out


def test_demo_quick_writes_every_artefact(demo_run) -> None:
    result, out = demo_run
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    paths = {k: Path(v) for k, v in summary["paths"].items()}
    for name in ("trace", "truth", "db", "findings", "prompts", "recommendations", "report"):
        assert paths[name].is_file(), name
        assert paths[name].parent == out
    assert {p.name for p in paths["png"].iterdir()} >= {"acceptance.png", "speedup.png"}
    # Every step of the pipeline ran (and was timed).
    assert set(summary["seconds"]) == {
        "simulate",
        "ingest",
        "diagnose",
        "flag",
        "replay",
        "recommend",
        "report",
    }


def test_demo_store_holds_each_steps_output(demo_run) -> None:
    result, out = demo_run
    summary = json.loads(result.stdout)
    con = duckdb.connect(str(out / "specdiag.duckdb"), read_only=True)
    count = lambda table: con.execute(f"select count(*) from {table}").fetchone()[0]  # noqa: E731
    assert count("requests") == 4000  # the quick plan's request count
    assert count("findings") == len(summary["findings"]) > 0
    # The mixed scenario's incidents are found: a regression and fast-but-wrong output at least.
    kinds = {f["kind"] for f in summary["findings"]}
    assert {"acceptance_regression", "fast_but_wrong"} <= kinds
    # Flagged prompts were replayed and saved with their finding number.
    prompts = [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()]
    assert len(prompts) == len(summary["replays"]) > 0
    assert count("replay_runs") == len(prompts)
    assert con.execute("select count(*) from replay_runs where finding_id is null").fetchone()[0] == 0
    assert count("replay_tokens") > 0
    assert len(summary["recommendations"]) == 3  # one per deployment of the small fleet


def test_demo_report_shows_findings_and_replays(demo_run) -> None:
    _result, out = demo_run
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "acceptance_regression" in page and "fast_but_wrong" in page
    assert 'id="spec-acceptance"' in page and 'id="spec-speedup"' in page
    assert page.count('<article class="replay">') > 0


def test_demo_summary_lists_paths(tmp_path: Path) -> None:
    """The human summary (no --json) is short and ends with where everything is."""
    from specdiag.demo import DemoResult, summary_lines

    result = DemoResult(out_dir=tmp_path, paths={"db": tmp_path / "s.duckdb", "report": tmp_path / "r.html"})
    lines = summary_lines(result)
    assert lines[0].startswith("specdiag demo: 0 findings")
    assert any(str(tmp_path / "r.html") in line for line in lines)


def test_models_dir_without_a_pair_is_an_input_error(run, tmp_path: Path) -> None:
    result = run("demo", "--quick", "--out", tmp_path / "o", "--models", tmp_path)
    assert result.exit_code == 3
    assert "config.json" in result.stderr and "Traceback" not in result.stderr
