"""The `specdiag` command: a thin layer over the library.

Each command lives in ``specdiag/commands/<name>.py`` and is imported only when it runs, so that
``specdiag ingest`` never pays for (or imports) what ``specdiag replay`` needs.
"""

from __future__ import annotations

import importlib
import sys

import click
import duckdb

from specdiag import __version__
from specdiag.errors import ExitCode, SpecdiagError

# name -> "module:attribute" of a click.Command
COMMANDS: dict[str, str] = {
    # each command module adds its line here, e.g. "ingest": "specdiag.commands.ingest:ingest",
    "simulate": "specdiag.commands.simulate:simulate",
    "ingest": "specdiag.commands.ingest:ingest",
    "diagnose": "specdiag.commands.diagnose:diagnose",
    "flag": "specdiag.commands.diagnose:flag",
    "report": "specdiag.commands.report:report",
    "demo": "specdiag.commands.demo:demo",
    "query": "specdiag.commands.query:query",
    "sql": "specdiag.commands.query:sql",
    "summary": "specdiag.commands.summary:summary",
    "explain": "specdiag.commands.explain:explain",
    "recommend": "specdiag.commands.recommend:recommend",
    "replay": "specdiag.commands.replay:replay",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="specdiag")
def cli() -> None:
    """Diagnose speculative decoding in production.

    Ingest traces and engine logs into a DuckDB store, find regressions and bottlenecks,
    replay flagged prompts, recommend tau, and write reports.

    Environment: SPECDIAG_DB (the store, instead of --db), SPECDIAG_MEMORY_LIMIT (DuckDB memory
    limit for every command, e.g. 1GB; DuckDB spills to disk beyond it), SPECDIAG_REDACT_KEY
    (ingest --redact), SPECDIAG_CACHE (where the demo model pair is cached).
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and map every specdiag error to a one-line message and an exit code."""
    try:
        cli.main(args=argv, prog_name="specdiag", standalone_mode=False)
    except SpecdiagError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(int(exc.exit_code))
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except duckdb.Error as exc:  # any store error that escaped the adapter
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        click.echo(f"error: database: {first}", err=True)
        sys.exit(int(ExitCode.STORE))
    except BrokenPipeError:
        sys.exit(0)
    sys.exit(0)
