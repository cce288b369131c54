"""`specdiag simulate`: write a simulated fleet's traces (or engine logs) and its ground truth."""

from __future__ import annotations

import time

import click

from specdiag.output import emit_json, message
from specdiag.simulate import FORMATS, SCENARIOS
from specdiag.simulate import simulate as run_simulation


@click.command()
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Output file.")
@click.option(
    "--scenario",
    type=click.Choice(SCENARIOS),
    default="healthy",
    show_default=True,
    help="Named fleet with its incidents (ignored with --config).",
)
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML fleet file (see examples/fleet.toml).",
)
@click.option(
    "--requests", type=click.IntRange(min=0), default=None, help="Requests (default: scenario/config)."
)
@click.option("--days", type=click.FloatRange(min=0, min_open=True), default=None, help="Days (default 7).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
@click.option(
    "--format", "fmt", type=click.Choice(FORMATS), default="trace", show_default=True, help="Output format."
)
@click.option("--json", "as_json", is_flag=True, help="Print the ground truth as JSON on stdout.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def simulate(
    out: str,
    scenario: str,
    config: str | None,
    requests: int | None,
    days: float | None,
    seed: int,
    fmt: str,
    as_json: bool,
    no_progress: bool,
) -> None:
    """Simulate a speculative-decoding fleet with known incidents.

    Writes OUT in the chosen format and the ground truth (incidents, true acceptance by position, cost model,
    speedup curve and best tau per deployment) to OUT.truth.json. The same options give the same bytes.
    """
    started = time.perf_counter()
    truth = run_simulation(
        out, scenario, config, requests, days, seed, fmt, progress=not no_progress and not as_json
    )
    generated = truth["generated"]
    elapsed = time.perf_counter() - started
    if as_json:
        emit_json(truth)
        return
    message(
        f"wrote {out} ({fmt}): {generated['requests']} requests, {generated['steps']} steps, "
        f"{len(truth['incidents'])} incidents in {elapsed:.1f} s"
    )
    message(f"ground truth: {out}.truth.json")
