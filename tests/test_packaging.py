"""A non-editable install ships the SQL queries and report templates inside the wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_queries_and_reports_and_finds_them(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("specdiag-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped_sql = {
        n.rsplit("/", 1)[-1]
        for n in names
        if n.startswith("specdiag/_assets/queries/") and n.endswith(".sql")
    }
    source_sql = {p.name for p in (ROOT / "queries").glob("*.sql")}
    assert shipped_sql == source_sql
    assert any(n.startswith("specdiag/_assets/reports/") for n in names) == any((ROOT / "reports").iterdir())
    assert any(n.startswith("replay/") for n in names)

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    # Run from an unrelated folder with only the installed copy on the path (plus the venv for dependencies).
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); "
            "from specdiag.resources import queries_dir; print(queries_dir())",
            str(target),
        ],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert Path(out).is_relative_to(target)
    assert sorted(p.name for p in Path(out).glob("*.sql")) == sorted(source_sql)
