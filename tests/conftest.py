"""Shared fixtures: a CLI runner that goes through specdiag's own error mapping, and a fresh database path."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hypothesis import settings

from specdiag.cli import main

os.environ.setdefault("TZ", "UTC")

# CI runs the property tests with a fixed seed so that a submission's result does not depend on the draw; local runs
# keep exploring new examples (and found real bugs that way).
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str


_entry = click.Command(
    "specdiag",
    callback=lambda args: main(list(args)),
    params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
)


@pytest.fixture
def run():
    """run("ingest", path, "--db", db) -> Run(exit_code, stdout, stderr), exactly as the installed command."""

    def _run(*args: object, input: str | bytes | None = None) -> Run:
        result = CliRunner().invoke(_entry, [str(a) for a in args], input=input, catch_exceptions=False)
        return Run(result.exit_code, result.stdout, result.stderr)

    return _run


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "test.duckdb"
