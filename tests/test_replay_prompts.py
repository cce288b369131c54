"""Prompt files: valid records load; each bad line is an InputError naming the file, the line and the reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replay.prompts import read_prompts, validate_record
from specdiag.errors import InputError


def write(tmp_path, lines):
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_reads_text_and_token_records_with_settings(tmp_path):
    path = write(
        tmp_path,
        [
            {
                "prompt_id": 1,
                "prompt": "def f(x):",
                "tau": 3,
                "temperature": 0.7,
                "top_p": 0.9,
                "request_id": "r1",
            },
            "",
            {"prompt_id": "b", "prompt_ids": [1, 2, 3], "finding_id": 2},
        ],
    )
    records = read_prompts(path)
    assert [r["prompt_id"] for r in records] == ["1", "b"]
    assert records[0]["tau"] == 3 and records[0]["request_id"] == "r1" and records[1]["finding_id"] == 2


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ({"prompt": "x"}, "missing prompt_id"),
        ({"prompt_id": 1}, "exactly one of"),
        ({"prompt_id": 1, "prompt": "x", "prompt_ids": [1]}, "exactly one of"),
        ({"prompt_id": 1, "prompt_ids": [1, -2]}, "non-negative integers"),
        ({"prompt_id": 1, "prompt_ids": []}, "non-negative integers"),
        ({"prompt_id": 1, "prompt": ""}, "non-empty string"),
        ({"prompt_id": 1, "prompt": "x", "tau": -1}, "tau"),
        ({"prompt_id": 1, "prompt": "x", "temperature": -0.5}, "temperature out of range"),
        ({"prompt_id": 1, "prompt": "x", "top_p": 0}, "top_p out of range"),
        ({"prompt_id": 1, "prompt": "x", "top_p": "high"}, "top_p must be a number"),
    ],
)
def test_bad_line_names_file_line_and_reason(tmp_path, line, reason):
    path = write(tmp_path, [{"prompt_id": 0, "prompt": "ok"}, line])
    with pytest.raises(InputError) as err:
        read_prompts(path)
    assert f"{path}:2:" in str(err.value) and reason in str(err.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_prompts(tmp_path / "absent.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(InputError, match="no prompt records"):
        read_prompts(tmp_path / "empty.jsonl")


@given(st.dictionaries(st.text(max_size=8), st.none() | st.integers() | st.text() | st.floats(), max_size=6))
def test_any_json_object_is_accepted_or_refused_with_a_reason(obj):
    try:
        record = validate_record(obj)
    except ValueError as exc:
        assert str(exc)
    else:
        assert isinstance(record["prompt_id"], str)
