"""Tables on stdout stay readable when stdout is a pipe or a file."""

from __future__ import annotations

import subprocess
import sys


def _width_when_piped(env_columns: str | None) -> int:
    env = {"PATH": "/usr/bin:/bin"} | ({"COLUMNS": env_columns} if env_columns else {})
    out = subprocess.run(
        [sys.executable, "-c", "from specdiag.output import out_console; print(out_console.width)"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    return int(out)


def test_piped_tables_are_wide_enough_for_a_summary_column() -> None:
    assert _width_when_piped(None) == 160  # rich alone would assume 80 and squeeze wide tables


def test_columns_wins_when_set() -> None:
    assert _width_when_piped("100") == 100


HOSTILE = "chat[/]\x1b[31m\tprod"  # rich markup that does not parse, a terminal escape, a tab


def test_names_from_logs_reach_the_terminal_as_text(run, db) -> None:  # type: ignore[no-untyped-def]
    """A deployment named with rich markup and control characters: every table shows it escaped, none reads it as
    markup (diagnose and recommend failed with MarkupError) or passes the escape to the terminal."""
    import duckdb

    from tests.test_diagnose import EAGER, fleet

    fleet(db, **{**EAGER, "deployments": (HOSTILE,)}, requests=300, with_steps=True)
    con = duckdb.connect(str(db), read_only=True)
    [(request_id,)] = con.execute("select request_id from requests order by request_id limit 1").fetchall()
    con.close()
    for argv in (
        ["summary"],
        ["diagnose"],
        ["recommend"],
        ["query", "acceptance_by_segment"],
        ["sql", "select deployment from requests limit 1"],
        ["explain", request_id],
    ):
        got = run(*argv, "--db", db)
        assert got.exit_code == 0, (argv, got.stderr)
        assert "\x1b" not in got.stdout + got.stderr, argv
        assert "chat[/]\\x1b[31m\\tprod" in got.stdout.replace("\n", "") or argv[0] == "recommend", argv


def test_bidirectional_controls_are_escaped() -> None:
    """U+202E would show the rest of a line right to left: a request id could then read as another."""
    from specdiag.output import plain

    assert str(plain("req\u202egnp.exe\u2066x")) == "req\\u202egnp.exe\\u2066x"
