"""Every queries/*.sql file runs as-is, the way the duckdb CLI runs it, and follows the house SQL style."""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pytest

from specdiag import queries
from specdiag.resources import queries_dir
from tests.test_queries import UNICODE_DEPLOYMENT, build_store

FILES = sorted(queries_dir().glob("*.sql"))
# the style test covers the general diagnostics; diagnose_* and recommend_* are internal queries of those modules
STYLED = [p for p in FILES if not p.stem.startswith(("diagnose_", "recommend_"))]
KEYWORDS = (
    "SELECT",
    "FROM",
    "WHERE",
    "WITH",
    "GROUP BY",
    "ORDER BY",
    "JOIN",
    "UNION",
    "CASE",
    "WHEN",
    " AS ",
)


def _code(text: str) -> str:
    """The SQL without comments and string literals."""
    text = re.sub(r"'(?:[^']|'')*'", "''", text)
    return "\n".join(line.split("--", 1)[0] for line in text.splitlines())


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlfiles") / "store.duckdb"
    build_store(path).close()
    return path


def _cli_rows(store: Path, path: Path, variables: dict[str, str]) -> list[dict]:
    """What a user gets from `duckdb -readonly store.duckdb` after `set variable name = 'value';` and `.read path`."""
    con = duckdb.connect(str(store), read_only=True)
    for name, value in variables.items():
        literal = "'" + value.replace("'", "''") + "'"
        con.execute(f"set variable {name} = {literal}")
    cursor = con.execute(path.read_text(encoding="utf-8"))
    columns = [d[0] for d in cursor.description]
    rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    con.close()
    return json.loads(queries.to_json(list(rows[0]) if rows else [], [tuple(r.values()) for r in rows]))[
        "rows"
    ]


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_file_runs_in_the_duckdb_cli_as_specdiag_runs_it(run, store: Path, path: Path) -> None:
    q = queries.parse_header(path, path.read_text(encoding="utf-8"))
    if queries.dollar_params(q.sql):
        pytest.skip(f"{path.name} uses $name placeholders, which only a prepared statement can bind")
    variables = {"deployment": "chat"} if any(p.name == "deployment" for p in q.params) else {}
    args = [a for name, value in variables.items() for a in ("-p", name, value)]
    result = run("query", q.name, *args, "--db", store, "--format", "json")
    assert result.exit_code == 0, result.stderr

    # the same rows; their order is only defined where the query orders them, so compare as multisets
    def canonical(rows: list[dict]) -> list[str]:
        return sorted(json.dumps(r, sort_keys=True) for r in rows)

    assert canonical(json.loads(result.stdout)["rows"]) == canonical(_cli_rows(store, path, variables))


@pytest.mark.parametrize("path", STYLED, ids=[p.stem for p in STYLED])
def test_file_style(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    code = _code(text)
    last = code.strip().rstrip(";").split("\n\n")[-1].strip()
    assert re.fullmatch(r"select \* from final( order by [\w, ]+)?", last), "end with `select * from final`"
    upper = [k.strip() for k in KEYWORDS if k in code]
    assert not upper, f"lowercase keywords: {upper}"


def test_unicode_parameter_through_the_cli_idiom(store: Path) -> None:
    path = queries_dir() / "acceptance_by_segment.sql"
    rows = _cli_rows(store, path, {"deployment": UNICODE_DEPLOYMENT})
    assert [r["task"] for r in rows] == ["数学"]


def test_every_general_query_is_documented() -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "queries.md").read_text(encoding="utf-8")
    missing = [p.stem for p in STYLED if f"`{p.stem}`" not in docs]
    assert not missing, f"add to docs/queries.md: {missing}"
