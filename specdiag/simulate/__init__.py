"""Simulated speculative-decoding fleets with known incidents and ground truth (`specdiag simulate`).

    simulate(out, scenario="healthy", config=None, requests=None, days=None, seed=0, fmt="trace") -> truth

writes `out` in the chosen format and the ground truth to `<out>.truth.json`, and returns the ground truth. The same
arguments give the same bytes. See docs/simulator.md for the model.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from specdiag.errors import InputError, UsageError
from specdiag.simulate.config import Fleet, load_config
from specdiag.simulate.engines import PrometheusWriter, SglangWriter, VllmWriter
from specdiag.simulate.generate import Block, generate_block
from specdiag.simulate.prompts import PromptPool
from specdiag.simulate.scenarios import SCENARIOS
from specdiag.simulate.scenarios import scenario as named_scenario
from specdiag.simulate.traffic import Mix, arrival_blocks
from specdiag.simulate.truth import ground_truth
from specdiag.simulate.writers import TraceWriter

__all__ = ["FORMATS", "SCENARIOS", "simulate", "build_fleet"]

FORMATS = ("trace", "trace-flat", "vllm", "sglang", "prometheus")
BLOCK_REQUESTS = 4096  # requests per generated block: bounds memory (~100 MB at ~80 steps per request)


class Writer(Protocol):
    lines: int

    def write(self, b: Block) -> None: ...

    def close(self) -> None: ...


def build_fleet(
    scenario: str = "healthy",
    config: str | os.PathLike[str] | Fleet | None = None,
    requests: int | None = None,
    days: float | None = None,
) -> Fleet:
    """The fleet of a named scenario or a TOML config, with requests / days overridden when given. Incidents of a
    named scenario keep their place as a fraction of the range. config may also be a Fleet (used as is)."""
    if isinstance(config, Fleet):
        fleet = copy.deepcopy(config)
    else:
        fleet = load_config(config) if config is not None else named_scenario(scenario)
    if days is not None:
        if days <= 0:
            raise UsageError("--days must be > 0")
        if config is None:
            for inc in fleet.incidents:
                inc.start = fleet.start + (inc.start - fleet.start) * (days / fleet.days)
        fleet.days = float(days)
    if requests is not None:
        if requests < 0:
            raise UsageError("--requests must be >= 0")
        fleet.requests = int(requests)
    return fleet


def _writer(fmt: str, out: IO[bytes], fleet: Fleet, pool: PromptPool, id_prefix: str) -> Writer:
    if fmt in ("trace", "trace-flat"):
        return TraceWriter(out, fleet, pool, id_prefix, nested=fmt == "trace")
    if fmt == "vllm":
        return VllmWriter(out, fleet)
    if fmt == "sglang":
        return SglangWriter(out, fleet)
    if fmt == "prometheus":
        return PrometheusWriter(out, fleet)
    raise UsageError(f"unknown format {fmt!r}", hint=f"one of {', '.join(FORMATS)}")


def simulate(
    out: str | os.PathLike[str],
    scenario: str = "healthy",
    config: str | os.PathLike[str] | Fleet | None = None,
    requests: int | None = None,
    days: float | None = None,
    seed: int = 0,
    fmt: str = "trace",
    progress: bool = False,
    on_block: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Simulate a fleet and write it; returns the ground truth (also written to `<out>.truth.json`).

    The file is written to `<out>.partial` and renamed when complete, so an interrupted run leaves no half file.
    on_block(requests_done, steps_done) is called after each block, for callers that show their own progress.
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}", hint=f"one of {', '.join(FORMATS)}")
    fleet = build_fleet(scenario, config, requests, days)
    out = Path(out)
    truth = ground_truth(fleet)
    rng = np.random.default_rng(seed)
    mix, pool = Mix.of(fleet), PromptPool()
    tag = scenario if config is None else "fleet" if isinstance(config, Fleet) else Path(config).stem
    totals = np.zeros((len(fleet.deployments), 6), dtype=np.int64)
    partial = out.with_name(out.name + ".partial")
    if not out.parent.is_dir():
        raise InputError(f"{out}: folder {out.parent} does not exist")
    done = 0
    try:
        with _progress(progress, fleet.requests) as advance, open(partial, "wb") as fh:
            writer = _writer(fmt, fh, fleet, pool, f"s{seed}-{tag}")
            steps_done = 0
            for t in arrival_blocks(fleet, fleet.requests, rng, BLOCK_REQUESTS):
                block = generate_block(fleet, t, done, rng, mix, pool)
                writer.write(block)
                _count(totals, block)
                done += len(t)
                steps_done += len(block.step)
                advance(len(t))
                if on_block is not None:
                    on_block(done, steps_done)
            writer.close()
    except BaseException:
        partial.unlink(missing_ok=True)  # no half-written output (Ctrl-C, disk full)
        raise
    os.replace(partial, out)
    truth.update(_summary(fleet, totals, writer, fmt, seed, scenario if config is None else None, config))
    Path(f"{out}.truth.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    return truth


def _count(totals: np.ndarray, b: Block) -> None:
    """Per deployment: requests, control requests, steps, verify steps (drafted > 0), drafted, accepted."""
    n = len(totals)
    eng = b.dep[b.step_req]
    totals[:, 0] += np.bincount(b.dep, minlength=n)
    totals[:, 1] += np.bincount(b.dep[b.tau == 0], minlength=n)
    totals[:, 2] += np.bincount(eng, minlength=n)
    totals[:, 3] += np.bincount(eng, weights=b.drafted > 0, minlength=n).astype(np.int64)
    totals[:, 4] += np.bincount(eng, weights=b.drafted, minlength=n).astype(np.int64)
    totals[:, 5] += np.bincount(eng, weights=b.accepted, minlength=n).astype(np.int64)


def _summary(
    fleet: Fleet,
    totals: np.ndarray,
    writer: Writer,
    fmt: str,
    seed: int,
    scenario: str | None,
    config: str | os.PathLike[str] | Fleet | None,
) -> dict[str, Any]:
    names = ("requests", "control_requests", "steps", "verify_steps", "drafted", "accepted")
    per_dep = {
        d.name: dict(zip(names, map(int, totals[e]), strict=True)) for e, d in enumerate(fleet.deployments)
    }
    generated = dict(zip(names, map(int, totals.sum(axis=0)), strict=True))
    engines: dict[str, dict[str, Any]] = {
        "vllm": {"interval_s": VllmWriter.INTERVAL_S, "engines": "Engine NNN = deployment index"},
        "sglang": {"engines": "DPn = deployment index"},
        "prometheus": {
            "scrape_s": PrometheusWriter.SCRAPE_S,
            "engines": 'model_name = deployment, engine="0"',
        },
    }
    engine = engines.get(fmt, {})
    return {
        "version": 1,
        "seed": seed,
        "scenario": scenario,
        "config": None if config is None else "<Fleet>" if isinstance(config, Fleet) else str(config),
        "format": fmt,
        "output": {"lines": writer.lines, "intervals": getattr(writer, "intervals", None), **engine},
        "generated": {**generated, "by_deployment": per_dep},
    }


class _progress:
    """A rich progress bar on stderr (when enabled); yields advance(n)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total
        self.bar: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        from specdiag.output import err_console

        self.bar = Progress(
            "simulate", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err_console
        )
        self.bar.start()
        task = self.bar.add_task("requests", total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
