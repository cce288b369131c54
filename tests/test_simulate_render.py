"""The vectorised JSON renderer writes exactly the numbers it is given (property test over unbounded inputs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specdiag.simulate.render import Fixed, Int, Rows, Tail, render, render_table

ints = st.lists(st.integers(min_value=0, max_value=2**40), min_size=1, max_size=60)


@given(
    ints,
    st.lists(st.floats(min_value=0, max_value=1e7, allow_nan=False), min_size=60, max_size=60),
    st.lists(st.booleans(), min_size=60, max_size=60),
)
@settings(max_examples=80, deadline=None)
def test_records_parse_back_to_their_numbers(
    values: list[int], floats: list[float], last: list[bool]
) -> None:
    n = len(values)
    a = np.array(values, dtype=np.int64)
    x = np.array(floats[:n])
    choice = np.array(last[:n], dtype=np.int64)
    data, lengths = render(
        n,
        [
            b'{"a":',
            Int(a),
            b',"x":',
            Fixed(x, 3),
            b',"id":"p-',
            Int(np.arange(n), 9, True),
            b'"}',
            Tail((b"\n", b"\n"), choice),
        ],
    )
    assert sum(lengths) == len(data)
    lines = data.decode("ascii").splitlines()
    assert len(lines) == n
    for i, line in enumerate(lines):
        obj = json.loads(line)
        assert obj["a"] == values[i]
        assert obj["x"] == pytest.approx(round(x[i], 3), abs=5e-4)
        assert obj["id"] == f"p-{i:09d}"
        assert line == f'{{"a":{values[i]},"x":{np.rint(x[i] * 1000) / 1000:.3f},"id":"p-{i:09d}"}}'


def test_tail_closes_records_as_chosen() -> None:
    data, lengths = render(3, [b"{", Int(np.array([0, 10, 7])), Tail((b"},", b"}]\n"), np.array([0, 0, 1]))])
    assert data == b"{0},{10},{7}]\n"
    assert lengths.tolist() == [4, 5, 5]


def test_negative_numbers_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        render(1, [Int(np.array([-1]))])


def test_large_blocks_use_the_same_text_as_small_ones() -> None:
    """Past 4096 records numbers are copied from pre-formatted tables: the bytes must not change."""
    rng = np.random.default_rng(0)
    n = 10_000
    a = rng.integers(0, 3000, n)
    a[:3] = [0, 9, 10]
    x = np.round(rng.random(n) * 300, 3)
    x[:2] = [0.0, 1e4]  # 1e4 ms = 10^7 units: past the table, digit by digit
    parts = [b'{"a":', Int(a), b',"x":', Fixed(x), b"}\n"]
    data, lengths = render(n, parts)
    expected = "".join(f'{{"a":{ai},"x":{xi:.3f}}}\n' for ai, xi in zip(a.tolist(), x.tolist(), strict=True))
    assert data.decode("ascii") == expected
    assert lengths.sum() == len(data)


def test_rows_repeat_pre_rendered_ids() -> None:
    ids = render_table(np.array([5, 123]), width=4, zero_pad=True)
    data, _ = render(3, [b"id=", Rows(ids, np.array([1, 0, 1])), b";"])
    assert data == b"id=0123;id=0005;id=0123;"
