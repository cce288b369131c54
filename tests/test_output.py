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
