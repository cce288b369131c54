"""`specdiag` commands other than replay and demo never import torch or transformers, not even at module import.

Commands run through the installed entry point (`specdiag.cli.main`) in a fresh interpreter that imports nothing
else; after each command the interpreter checks sys.modules, so the check covers everything the command imported
while it ran, and names the first command that pulled torch or transformers in. (Several commands share one
interpreter to keep the test fast on 2 cores; a module imported by one command stays imported, so an offender is
still caught, at the latest by the command that imported it.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb

from specdiag.cli import COMMANDS

HEAVY = ("torch", "transformers")
PASSED_ENV = ("PATH", "HOME", "SPECDIAG_CACHE", "CI")  # not SPECDIAG_DB: every command names its --db
LIGHT_COMMANDS = (
    "ingest", "summary", "query", "sql", "diagnose", "flag", "recommend", "explain", "report", "simulate",
)  # fmt: skip

# argv: a JSON list of command lines. Prints one JSON line per command: [exit code, stdout].
RUNNER = f"""
import contextlib, io, json, sys
from specdiag.cli import main
for argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code or 0
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in {set(HEAVY)!r})
    if heavy:
        sys.stderr.write("HEAVY IMPORTS after " + " ".join(argv) + ": " + ", ".join(heavy[:5]) + "\\n")
        sys.exit(97)
    sys.__stdout__.write(json.dumps([code, out.getvalue()]) + "\\n")
"""


def specdiag(commands: list[list[object]], cwd: Path) -> list[tuple[int, str]]:
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps([[str(a) for a in argv] for argv in commands])],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        env={**{k: v for k, v in os.environ.items() if k in PASSED_ENV}, "TZ": "UTC", "COLUMNS": "120"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = [tuple(json.loads(line)) for line in done.stdout.splitlines()]
    for argv, (code, _out) in zip(commands, results):
        assert code == 0, f"specdiag {' '.join(map(str, argv))} exited {code}: {done.stderr[-2000:]}"
    return results  # type: ignore[return-value]


def test_every_light_command_is_registered() -> None:
    assert set(LIGHT_COMMANDS) <= set(COMMANDS)


def test_the_check_catches_a_heavy_import(tmp_path: Path) -> None:
    # A stand-in module is enough: the check reads sys.modules (importing the real torch would cost seconds).
    code = RUNNER.replace(
        "from specdiag.cli import main",
        "from specdiag.cli import main\nimport types\nsys.modules['torch.nn'] = types.ModuleType('torch.nn')",
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps([["--help"]])], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 97 and "torch" in done.stderr


def test_help_imports_no_torch(tmp_path: Path) -> None:
    names = [c for c in LIGHT_COMMANDS if c in COMMANDS]
    results = specdiag([[name, "--help"] for name in names], tmp_path)
    assert len(results) == len(names)
    assert all("Usage:" in out for _code, out in results)


def test_real_commands_import_no_torch(tmp_path: Path) -> None:
    """simulate -> ingest -> summary -> query -> sql -> diagnose -> flag -> recommend -> explain -> report on a small
    simulated fleet."""
    db, trace = tmp_path / "s.duckdb", tmp_path / "fleet.jsonl"
    specdiag(
        [
            ["simulate", "--scenario", "mixed", "--requests", "600", "--out", trace, "--no-progress"],
            ["ingest", trace, "--db", db],
            ["summary", "--db", db],
            ["query", "--db", db, "--list"],
            ["sql", "--db", db, "select count(*) as n from requests"],
        ],
        tmp_path,
    )
    con = duckdb.connect(str(db), read_only=True)
    [(request_id,)] = con.execute("select request_id from requests order by request_id limit 1").fetchall()
    con.close()
    results = specdiag(
        [
            ["diagnose", "--db", db, "--json"],
            ["recommend", "--db", db, "--json"],
            ["explain", request_id, "--db", db],
            ["report", "--db", db, "--out", tmp_path / "r.html"],
        ],
        tmp_path,
    )
    findings = json.loads(results[0][1])["findings"]
    assert findings, "the mixed scenario should give at least one finding to flag"
    specdiag([["flag", "--db", db, "--finding", 1, "--out", tmp_path / "prompts.jsonl"]], tmp_path)
    assert (tmp_path / "prompts.jsonl").stat().st_size > 0


def test_group_help_and_version_import_no_library(tmp_path: Path) -> None:
    """`specdiag --help` and `--version` answer at once: they load no command, so none of the data libraries."""
    code = (
        "import contextlib, io, sys\nfrom specdiag.cli import main\n"
        "for argv in (['--help'], ['--version']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n            main(argv)\n        except SystemExit:\n            pass\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[1:]))))"
    )
    libs = ["duckdb", "polars", "pyarrow", "numpy", "scipy", "altair", "rich", *HEAVY]
    done = subprocess.run([sys.executable, "-c", code, *libs], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ""
