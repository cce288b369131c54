"""The main job end to end on a simulated fleet: simulate -> ingest -> diagnose -> flag -> replay -> recommend ->
report. ``specdiag demo`` calls :func:`run_demo`; every step is the same library call the separate commands make.

The only torch import is replay's (lazily, inside ``replay.api.replay_prompts``), when the replay step runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from specdiag.errors import InputError
from specdiag.output import dumps, err_console, message

# Findings worth replaying first: replay answers "is it the draft, the target or the settings?" for these.
REPLAY_KINDS = ("acceptance_regression", "fast_but_wrong", "tau_too_high", "tau_too_low", "draft_bottleneck")


@dataclass(frozen=True)
class Plan:
    """How big the demo is. FULL: a week of a small fleet (three deployments) at production-like request counts;
    QUICK: the same week, fewer requests, a few short replays (for CI)."""

    requests: int
    days: float
    findings_replayed: int  # findings whose prompts are replayed
    prompts_per_finding: int
    max_new_tokens: int
    scenario: str = (
        "mixed"  # every incident kind: draft rollout, lossy acceptance, batch surge, tau misconfig, ...
    )


FULL = Plan(requests=20_000, days=7.0, findings_replayed=3, prompts_per_finding=4, max_new_tokens=48)
QUICK = Plan(requests=4_000, days=7.0, findings_replayed=2, prompts_per_finding=2, max_new_tokens=8)


@dataclass
class DemoResult:
    out_dir: Path
    paths: dict[str, Path] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)
    recommendations: list[dict[str, Any]] = field(default_factory=list)
    replays: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    truth_incidents: list[str] = field(default_factory=list)


@contextmanager
def _spinner(description: str, show: bool) -> Iterator[None]:
    """An elapsed-time bar for library steps that report no progress of their own (diagnose, recommend)."""
    with Progress(
        SpinnerColumn(), TextColumn(description), BarColumn(), TimeElapsedColumn(),
        console=err_console, disable=not show, transient=False,
    ) as bar:  # fmt: skip
        task = bar.add_task(description, total=None)
        yield
        bar.update(task, total=1, completed=1)


def _models(models: Path | None) -> tuple[str, str]:
    """(target, draft) for replay: the built-in demo pair, or DIR/target and DIR/draft (HF folders)."""
    if models is None:
        return "demo", "demo"
    target, draft = models / "target", models / "draft"
    for folder in (target, draft):
        if not (folder / "config.json").is_file():
            raise InputError(
                f"{folder}: no config.json (--models DIR needs DIR/target and DIR/draft model folders)"
            )
    return str(target), str(draft)


def pick_prompts(con: Any, findings: list[Any], plan: Plan) -> list[dict[str, Any]]:
    """Prompt records for the first ``plan.findings_replayed`` findings of a replayable kind that have prompts."""
    from specdiag.diagnose import flag

    chosen: list[dict[str, Any]] = []
    replayed = 0
    for f in sorted(findings, key=lambda f: (f.kind not in REPLAY_KINDS[:2], f.finding_id)):
        if replayed >= plan.findings_replayed:
            break
        if f.kind not in REPLAY_KINDS:
            continue
        records = [
            r for r in flag(con, finding_id=f.finding_id, n=plan.prompts_per_finding) if r.get("prompt")
        ]
        if records:
            chosen += records
            replayed += 1
    return chosen


def run_demo(
    out_dir: str | Path,
    quick: bool = False,
    models: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    png: bool = True,
) -> DemoResult:
    """Run the whole pipeline into ``out_dir`` (created; the demo's own files in it are replaced)."""
    target, draft = _models(Path(models) if models is not None else None)  # before any slow import
    from replay.api import replay_prompts
    from replay.save import save_results
    from specdiag.diagnose import diagnose, save_findings
    from specdiag.ingest import ingest_paths
    from specdiag.recommend import recommend_from_store
    from specdiag.report import write_report
    from specdiag.simulate import simulate
    from specdiag.store import connect

    plan = QUICK if quick else FULL
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    result = DemoResult(out_dir=out)
    paths = result.paths
    paths["trace"] = out / "fleet.jsonl"
    paths["truth"] = out / "fleet.jsonl.truth.json"
    paths["db"] = out / "specdiag.duckdb"
    for stale in (paths["db"], out / "specdiag.duckdb.wal"):
        stale.unlink(
            missing_ok=True
        )  # a fresh store each run: ingest would skip the same file as a duplicate

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        value = fn()
        result.seconds[name] = round(time.perf_counter() - t0, 2)
        return value

    message(
        f"[bold]1/7 simulate[/]: {plan.requests:,} requests over {plan.days:g} days, scenario {plan.scenario}",
        markup=True,
    )
    truth = timed(
        "simulate",
        lambda: simulate(
            paths["trace"], scenario=plan.scenario, requests=plan.requests, days=plan.days, seed=seed,
            progress=progress,
        ),
    )  # fmt: skip
    result.truth_incidents = [str(i.get("kind", i)) for i in truth.get("incidents", [])]

    message("[bold]2/7 ingest[/]", markup=True)
    timed("ingest", lambda: ingest_paths([paths["trace"]], db=paths["db"], progress=progress))

    con = connect(paths["db"])
    try:
        message("[bold]3/7 diagnose[/]", markup=True)
        with _spinner("diagnosing", progress):
            findings = timed("diagnose", lambda: save_findings(con, diagnose(con)))
        result.findings = [f.to_dict() for f in findings]
        paths["findings"] = out / "findings.json"
        paths["findings"].write_text(dumps({"findings": result.findings}) + "\n", encoding="utf-8")

        message("[bold]4/7 flag[/]", markup=True)
        records = timed("flag", lambda: pick_prompts(con, findings, plan))
        paths["prompts"] = out / "prompts.jsonl"
        paths["prompts"].write_text("".join(dumps(r) + "\n" for r in records), encoding="utf-8")

        message(
            f"[bold]5/7 replay[/]: {len(records)} prompts, {plan.max_new_tokens} new tokens each", markup=True
        )
        if records:
            results = timed(
                "replay",
                lambda: replay_prompts(
                    records, target, draft, max_new_tokens=plan.max_new_tokens, seed=seed, device="cpu",
                    progress=progress,
                ),
            )  # fmt: skip
            save_results(con, results)
            result.replays = [
                {k: r[k] for k in ("prompt_id", "acceptance_rate", "mean_acceptance_length", "speedup")}
                for r in results
            ]

        message("[bold]6/7 recommend[/]", markup=True)
        with _spinner("recommending tau (bootstrap over requests)", progress):
            result.recommendations = timed("recommend", lambda: recommend_from_store(con, seed=seed))
        paths["recommendations"] = out / "recommendations.json"
        paths["recommendations"].write_text(
            dumps({"recommendations": result.recommendations}) + "\n", encoding="utf-8"
        )

        message("[bold]7/7 report[/]", markup=True)
        written = timed(
            "report",
            lambda: write_report(
                con, out / "report.html", png_dir=out / "png" if png else None, progress=progress
            ),
        )
        paths["report"] = written[0]
        if png:
            paths["png"] = out / "png"
    finally:
        con.close()
    return result


def summary_lines(result: DemoResult) -> list[str]:
    """The short summary `specdiag demo` prints on stdout: what was found, what to set, where it all is."""
    lines = [f"specdiag demo: {len(result.findings)} findings, {len(result.replays)} prompts replayed"]
    for f in result.findings[:6]:
        lines.append(f"  #{f['finding_id']} {f['severity']:<6} {f['kind']:<22} {f['summary']}")
    for r in result.recommendations:
        if r.get("recommended_tau") is None:
            continue
        lines.append(
            f"  {r['deployment']}: tau {r['current_tau']} -> {r['recommended_tau']} "
            f"(speedup {r['current_speedup']:.2f}x -> {r['expected_speedup']:.2f}x)"
        )
    lines.append("wrote:")
    lines += [f"  {name:<16}{path}" for name, path in result.paths.items()]
    lines.append(
        f"open {result.paths.get('report')} in a browser; query the store with --db {result.paths['db']}"
    )
    return lines


def summary_json(result: DemoResult) -> dict[str, Any]:
    return json.loads(
        dumps(
            {
                "paths": {k: str(v) for k, v in result.paths.items()},
                "findings": result.findings,
                "recommendations": result.recommendations,
                "replays": result.replays,
                "seconds": result.seconds,
            }
        )
    )
