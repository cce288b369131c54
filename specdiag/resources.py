"""Where the shipped SQL queries and report templates live.

In a wheel they are packaged under ``specdiag/_assets``; in a source checkout (editable install, tests) they are the
top-level ``queries/`` and ``reports/`` folders.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def _asset_dir(name: str) -> Path:
    for candidate in (_PKG / "_assets" / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"specdiag's {name}/ folder is missing from this installation")


def queries_dir() -> Path:
    return _asset_dir("queries")


def reports_dir() -> Path:
    return _asset_dir("reports")
