"""specdiag simulate: determinism, the trace format v1 field rules, clean ingest with round-tripped counts, the CLI
and the TOML config."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from specdiag.errors import InputError
from specdiag.simulate import FORMATS, simulate
from specdiag.simulate.config import fleet_from_dict, load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fleet.toml"


def _small(tmp_path: Path, fmt: str, seed: int = 0, name: str = "out") -> tuple[bytes, dict]:
    out = tmp_path / f"{name}-{fmt}-{seed}"
    truth = simulate(out, scenario="mixed", requests=400, days=1.0, seed=seed, fmt=fmt)
    return out.read_bytes(), truth


@pytest.mark.parametrize("fmt", FORMATS)
def test_same_seed_gives_same_bytes(tmp_path: Path, fmt: str) -> None:
    first, truth1 = _small(tmp_path, fmt, name="a")
    second, truth2 = _small(tmp_path, fmt, name="b")
    assert first == second and len(first) > 0
    assert truth1 == truth2
    assert (tmp_path / f"a-{fmt}-0.truth.json").read_bytes() == (
        tmp_path / f"b-{fmt}-0.truth.json"
    ).read_bytes()


def test_other_seed_gives_other_traffic(tmp_path: Path) -> None:
    assert _small(tmp_path, "trace", seed=0)[0] != _small(tmp_path, "trace", seed=1)[0]


REQUIRED = {
    "request_id": str,
    "ts": str,
    "deployment": str,
    "target_model": str,
    "draft_model": str,
    "tau": int,
}
OPTIONAL = {
    "temperature": (int, float),
    "task": str,
    "prompt": str,
    "prompt_tokens": int,
    "output_tokens": int,
    "latency_ms": (int, float),
    "ttft_ms": (int, float),
    "batch_size": int,
    "quality": (int, float),
    "shadow_match": bool,
    "acceptance": str,
}


def _check_request(obj: dict, truth: dict) -> None:
    """The field rules of trace format v1 (issue 2), plus the simulator's own consistency."""
    for key, kind in REQUIRED.items():
        assert isinstance(obj[key], kind), key
    for key, kind in OPTIONAL.items():
        if key in obj:
            assert isinstance(obj[key], kind) and not isinstance(obj[key], bool) or kind is bool, key
    ts = datetime.fromisoformat(obj["ts"].replace("Z", "+00:00"))
    assert truth["start"] <= obj["ts"] < truth["end"] and ts.tzinfo is not None
    assert obj["tau"] >= 0 and obj["temperature"] >= 0 and 0 <= obj["quality"] <= 1
    assert obj["batch_size"] >= 1 and obj["latency_ms"] >= obj["ttft_ms"] >= 0
    steps = obj["steps"]
    assert [s["step"] for s in steps] == list(range(len(steps)))
    for s in steps:
        assert 0 <= s["accepted"] <= s["drafted"] == obj["tau"]
        assert s["draft_ms"] >= 0 and s["verify_ms"] > 0
    # every step emits accepted + 1 tokens; the request's output is exactly that many tokens
    assert obj["output_tokens"] == sum(s["accepted"] + 1 for s in steps)
    step_ms = sum(s["draft_ms"] + s["verify_ms"] for s in steps)
    assert obj["latency_ms"] >= step_ms - 1e-6 * len(steps)


def test_trace_lines_follow_format_v1(tmp_path: Path) -> None:
    data, truth = _small(tmp_path, "trace")
    objs = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    assert len(objs) == truth["generated"]["requests"] == 400
    assert len({o["request_id"] for o in objs}) == len(objs)
    for obj in objs:
        _check_request(obj, truth)
    assert [o["ts"] for o in objs] == sorted(o["ts"] for o in objs)  # arrivals in time order
    assert sum(len(o["steps"]) for o in objs) == truth["generated"]["steps"]
    assert {o["task"] for o in objs} <= {"code", "chat", "summarize", "translate"}


def test_flat_trace_has_the_same_steps_as_nested(tmp_path: Path) -> None:
    nested = [json.loads(x) for x in _small(tmp_path, "trace")[0].decode().splitlines()]
    flat = [json.loads(x) for x in _small(tmp_path, "trace-flat")[0].decode().splitlines()]
    steps = {(s["request_id"], s["step"]): s for s in flat if s.get("event") == "step"}
    requests = [o for o in flat if "event" not in o]
    assert [r["request_id"] for r in requests] == [o["request_id"] for o in nested]
    for o in nested:
        for s in o["steps"]:
            flat_step = steps.pop((o["request_id"], s["step"]))
            assert {k: flat_step[k] for k in s} == s
    assert not steps


def _ingest(path: Path, db: Path):  # noqa: ANN202 - IngestStats from another module
    ingest = pytest.importorskip("specdiag.ingest")
    return ingest.ingest_paths([path], db=db, year=2026, progress=False)


@pytest.mark.parametrize("fmt", ["trace", "trace-flat"])
def test_trace_ingests_with_zero_rejects_and_same_counts(tmp_path: Path, fmt: str) -> None:
    import duckdb

    out = tmp_path / f"sim.{fmt}.jsonl"
    truth = simulate(out, scenario="mixed", requests=600, days=2.0, fmt=fmt)
    stats = _ingest(out, tmp_path / "db.duckdb")
    g = truth["generated"]
    assert stats.rejected == 0 and stats.duplicates == 0
    assert (stats.requests, stats.steps) == (g["requests"], g["steps"])
    con = duckdb.connect(str(tmp_path / "db.duckdb"), read_only=True)
    drafted, accepted, verify = con.execute(
        "select sum(drafted), sum(accepted), count(*) filter (where drafted > 0) from steps"
    ).fetchone()
    assert (drafted, accepted, verify) == (g["drafted"], g["accepted"], g["verify_steps"])
    by_dep = dict(con.execute("select deployment, count(*) from requests group by 1").fetchall())
    assert by_dep == {k: v["requests"] for k, v in g["by_deployment"].items() if v["requests"]}
    # the draft rollout's new version is what the store sees after the incident start
    rollout = next(i for i in truth["incidents"] if i["kind"] == "draft_rollout")
    after = con.execute(
        "select distinct draft_model from requests where deployment = ? and ts >= ?::timestamptz",
        [rollout["deployment"], rollout["start"]],
    ).fetchall()
    assert after == [(rollout["params"]["draft_model"],)]


@pytest.mark.parametrize("fmt", ["vllm", "prometheus", "sglang"])
def test_engine_formats_ingest_with_zero_rejects_and_same_counts(tmp_path: Path, fmt: str) -> None:
    import duckdb

    pytest.importorskip(f"specdiag.formats.{ {'vllm': 'vllm_log', 'sglang': 'sglang_log'}.get(fmt, fmt) }")
    out = tmp_path / f"sim.{fmt}.log"
    # half a day keeps the Prometheus file small (one scrape of every counter each 5 minutes)
    truth = simulate(out, scenario="mixed", requests=300, days=0.5, fmt=fmt)
    stats = _ingest(out, tmp_path / "db.duckdb")
    g = truth["generated"]
    assert stats.rejected == 0
    con = duckdb.connect(str(tmp_path / "db.duckdb"), read_only=True)
    windows, drafted, accepted, verify = con.execute(
        "select count(*), sum(drafted), sum(accepted), sum(verify_steps) from windows"
    ).fetchone()
    assert windows == truth["output"]["intervals"] * (3 if fmt == "prometheus" else 1)
    if fmt == "sglang":  # SGLang prints no counts, only the mean acceptance length per interval
        return
    assert (drafted, accepted) == (g["drafted"], g["accepted"])
    if fmt == "prometheus":
        assert verify == g["verify_steps"]
    else:  # vLLM prints MAL to 2 decimals; verify steps = accepted / (MAL - 1) is derived from it
        assert verify == pytest.approx(g["verify_steps"], rel=0.01)


def test_cli_writes_file_and_truth(run, tmp_path: Path) -> None:
    out = tmp_path / "cli.jsonl"
    result = run(
        "simulate", "--out", out, "--scenario", "regression", "--requests", 300, "--days", 1, "--json"
    )
    assert result.exit_code == 0, result.stderr
    truth = json.loads(result.stdout)
    assert truth["generated"]["requests"] == 300 and truth["scenario"] == "regression"
    assert [i["kind"] for i in truth["incidents"]] == ["draft_rollout"]
    assert json.loads((tmp_path / "cli.jsonl.truth.json").read_text()) == truth
    assert len(out.read_text().splitlines()) == 300


def test_cli_reports_a_bad_config_in_one_line(run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[fleet]\ndays = 1\n[[deployments]]\nname = "x"\nbogus = 1\n')
    result = run("simulate", "--out", tmp_path / "o", "--config", bad)
    assert result.exit_code == 3
    assert "bad.toml" in result.stderr and "bogus" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_example_config_loads_and_runs(tmp_path: Path) -> None:
    fleet = load_config(EXAMPLE)
    assert [d.name for d in fleet.deployments] == ["chat-prod", "code-assist"]
    truth = simulate(tmp_path / "ex.jsonl", config=EXAMPLE, requests=200)
    assert {i["kind"] for i in truth["incidents"]} == {"draft_rollout", "lossy_acceptance"}
    assert truth["config"] == str(EXAMPLE)


BASE = {
    "deployments": [
        {
            "name": "d",
            "target_model": "t@v1",
            "draft_model": "q@v1",
            "tau": 4,
            "share": 1.0,
            "batch_size": 4,
            "floor_ms": 10.0,
            "compute_ms": 0.1,
            "draft_ms_per_token": 1.0,
            "tasks": {"chat": 1.0},
        }
    ]
}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"incidents": [{"kind": "meteor", "deployment": "d", "start": 1.0}]}, "kind 'meteor'"),
        ({"incidents": [{"kind": "batch_surge", "deployment": "nope", "start": 1.0}]}, "unknown deployment"),
        ({"incidents": [{"kind": "batch_surge", "deployment": "d", "start": 1.0, "task": "chat"}]}, "whole"),
        ({"incidents": [{"kind": "draft_rollout", "deployment": "d", "start": "soon"}]}, "bad timestamp"),
        ({"deployments": [{**BASE["deployments"][0], "tau": 40}]}, "tau must be"),
        ({"deployments": [{**BASE["deployments"][0], "tasks": {"poetry": 1.0}}]}, "tasks must be"),
        ({"fleet": {"control_share": 2.0}}, "control_share"),
        ({"deployments": [{**BASE["deployments"][0], "tau": "4"}]}, "tau must be an integer"),
        ({"deployments": [{**BASE["deployments"][0], "tau": 4.5}]}, "tau must be an integer"),
        (
            {"incidents": [{"kind": "tau_misconfig", "deployment": "d", "start": 1.0, "tau": "abc"}]},
            "tau must be",
        ),
        (
            {
                "incidents": [
                    {"kind": "lossy_acceptance", "deployment": "d", "start": 1.0, "quality_drop": 0.9}
                ]
            },
            None,
        ),
        (
            {
                "incidents": [
                    {"kind": "lossy_acceptance", "deployment": "d", "start": 1.0, "quality_drop": 1.5}
                ]
            },
            "qual",
        ),
        (
            {
                "incidents": [
                    {"kind": "lossy_acceptance", "deployment": "d", "start": 1.0, "shadow_match_rate": 1.5}
                ]
            },
            "shadow_match_rate must be in",
        ),
        (
            {
                "incidents": [
                    {"kind": "draft_rollout", "deployment": "d", "start": 1.0, "acceptance_drop": -0.5}
                ]
            },
            "drop",
        ),
        (
            {"incidents": [{"kind": "batch_surge", "deployment": "d", "start": 1.0, "batch_scale": 0.0}]},
            "batch_scale",
        ),
        (
            {
                "incidents": [
                    {"kind": "small_verifier", "deployment": "d", "start": 1.0, "verify_scale": -1.0}
                ]
            },
            "verify",
        ),
        (
            {
                "incidents": [
                    {"kind": "temperature_change", "deployment": "d", "start": 1.0, "temperature": -3.0}
                ]
            },
            "temperature must be >= 0",
        ),
    ],
)
def test_config_errors_name_the_entry(change: dict, words: str | None) -> None:
    if words is None:  # in range: accepted
        fleet_from_dict({**BASE, **change}, "my.toml")
        return
    with pytest.raises(InputError, match=words):
        fleet_from_dict({**BASE, **change}, "my.toml")


def test_simulate_never_imports_torch() -> None:
    code = (
        "import sys, tempfile, os\n"
        "from specdiag.cli import main\n"
        "from specdiag.simulate import simulate\n"
        "import specdiag.commands.simulate\n"
        "d = tempfile.mkdtemp()\n"
        "simulate(os.path.join(d, 'x'), requests=50, days=0.1)\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_refuses_a_missing_output_folder(run, tmp_path: Path) -> None:
    result = run("simulate", "--out", tmp_path / "nowhere" / "x.jsonl", "--requests", 10)
    assert result.exit_code == 3 and "does not exist" in result.stderr


def test_prometheus_scrapes_split_by_tau_as_the_trace_does(tmp_path: Path) -> None:
    """The mixed scenario changes chat-prod's tau: the scrapes restart the server's counters with the new tau's
    positions, so windows carry the tau in effect (every window said the largest before), as the trace's requests."""
    import duckdb

    sql = {
        "prometheus": "select deployment, tau, sum(drafted), sum(accepted) from windows group by all order by all",
        "trace": "select deployment, tau, sum(drafted), sum(accepted) from requests where tau > 0 "
        "group by all order by all",
    }
    found = {}
    for fmt in sql:
        out = tmp_path / f"sim.{fmt}"
        simulate(out, scenario="mixed", requests=600, days=1.0, seed=3, fmt=fmt)
        _ingest(out, tmp_path / f"{fmt}.duckdb")
        with duckdb.connect(str(tmp_path / f"{fmt}.duckdb"), read_only=True) as con:
            found[fmt] = con.execute(sql[fmt]).fetchall()
    assert found["prometheus"] == found["trace"]
    assert len({(dep, tau) for dep, tau, *_ in found["trace"]}) > len({dep for dep, *_ in found["trace"]})
