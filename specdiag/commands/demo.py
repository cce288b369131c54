"""`specdiag demo`: the whole product on a simulated week of a small fleet (the only command besides replay that
imports torch, through replay, when it runs)."""

from __future__ import annotations

import click

from specdiag.output import emit_json


@click.command("demo")
@click.option(
    "--quick", is_flag=True, help="Fewer requests and a few short replays (about a minute, for CI)."
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="specdiag-demo",
    show_default=True,
    help="Folder for the trace, the store, the findings, the prompts, the report and its PNGs.",
)
@click.option(
    "--models",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="Replay on DIR/target and DIR/draft (HF model folders) instead of the built-in demo pair "
    "(trained on first use, a few minutes on 2 cores).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the simulation and the replays."
)
@click.option("--no-png", is_flag=True, help="Skip the PNG copy of each chart.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def demo(out_dir: str, quick: bool, models: str | None, seed: int, no_png: bool, as_json: bool) -> None:
    """Simulate a week of a small fleet with incidents, ingest it, diagnose, flag and replay prompts on the demo
    model pair, recommend tau, and write the report. Prints a short summary and the paths written."""
    from specdiag.demo import run_demo, summary_json, summary_lines

    result = run_demo(out_dir, quick=quick, models=models, seed=seed, progress=True, png=not no_png)
    if as_json:
        emit_json(summary_json(result))
        return
    click.echo("\n".join(summary_lines(result)))
