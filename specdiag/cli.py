"""The `specdiag` command: a thin layer over the library.

Each command lives in ``specdiag/commands/<name>.py`` and is imported only when it runs, so that
``specdiag ingest`` never pays for (or imports) what ``specdiag replay`` needs.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from specdiag import __version__
from specdiag.errors import ExitCode, SpecdiagError

# name -> "module:attribute" of a click.Command
COMMANDS: dict[str, str] = {
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

# name -> the first sentence of its help, so that `specdiag --help` lists the commands without importing them all
# (scipy, polars, duckdb: 2 s). tests/test_cli_docs.py checks each against the command's own help.
SUMMARIES: dict[str, str] = {
    "demo": "Simulate a week of a small fleet with incidents, ingest it, diagnose, flag and replay prompts on the "
    "demo model pair, recommend tau, and write the report.",
    "diagnose": "Find acceptance regressions, fast-but-wrong output, bottlenecks and mis-set tau.",
    "explain": "Where one request's time went, its bottleneck, and its cost at the best tau and with speculation off.",
    "flag": "Write representative requests of a finding (worst and typical cases) as prompt records for replay.",
    "ingest": "Ingest trace files (JSON Lines, optionally gzip/zstd) and engine logs into the store.",
    "query": "Run the named query queries/NAME.sql against the store (parameter values are always bound).",
    "recommend": "Recommend tau (0 = speculation off) with the expected speedup.",
    "replay": "Replay prompts through a target/draft pair: what the draft gets wrong, what each pass costs, and "
    "whether the output is exactly the target's own.",
    "report": "Write an HTML report: findings, acceptance and speedup charts, recommendations, replays, data quality.",
    "simulate": "Simulate a speculative-decoding fleet with known incidents.",
    "sql": "Run ad-hoc SQL against the store, opened read-only (the SQL reads and writes no other file).",
    "summary": "Requests, verify steps, acceptance rate, MAL and alpha per deployment and source (trace or engine).",
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

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of `specdiag --help` as click writes it, from SUMMARIES rather than imported commands."""
        limit = formatter.width - 6 - max(map(len, COMMANDS))
        rows = [(n, click.Command(n, help=SUMMARIES[n]).get_short_help_str(limit)) for n in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


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


def _interrupted(exc: Exception, duckdb: Any) -> bool:
    """DuckDB stops a statement on SIGINT with InterruptException, or a RuntimeError "Query interrupted" when the
    statement came from a relation (an insert of a frame)."""
    if duckdb is not None and isinstance(exc, duckdb.InterruptException):
        return True
    return isinstance(exc, RuntimeError) and str(exc).strip().lower().startswith("query interrupted")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and map every specdiag error to a one-line message and an exit code."""
    try:
        cli.main(args=argv, prog_name="specdiag", standalone_mode=False)
    except SpecdiagError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(int(exc.exit_code))
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except Exception as exc:
        # a store error that escaped the adapter (duckdb is imported only by the commands that use it)
        duckdb = sys.modules.get("duckdb")
        if _interrupted(exc, duckdb):  # Ctrl-C while DuckDB ran a statement
            click.echo("aborted", err=True)
            sys.exit(130)
        if duckdb is None or not isinstance(exc, duckdb.Error):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        click.echo(f"error: database: {first}", err=True)
        sys.exit(int(ExitCode.STORE))
    except BrokenPipeError:
        sys.exit(0)
    sys.exit(0)


if __name__ == "__main__":
    main()
