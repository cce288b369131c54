"""Escaping for the script context and the token colouring, for any input."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from specdiag.report.html import script_json, token_style

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_script_json_round_trips_and_cannot_close_the_script(value) -> None:
    text = script_json(value)
    assert json.loads(text) == value
    for char in ("<", ">", "&", "\u2028", "\u2029"):
        assert char not in text


@given(st.text(alphabet="<>/&'\"\u2028\u2029scriptSCRIPT!- "))
def test_script_json_of_markup_like_text(s: str) -> None:
    text = script_json({"deployment": s})
    assert "</" not in text.lower() and "<!--" not in text
    assert json.loads(text) == {"deployment": s}


def test_non_finite_numbers_become_null() -> None:
    assert json.loads(script_json({"speedup": float("nan"), "ci": [float("inf"), 1.0]})) == {
        "speedup": None,
        "ci": [None, 1.0],
    }


@given(st.booleans(), st.none() | st.floats(allow_nan=False))
def test_token_style_is_numbers_only_and_stronger_when_confident(accepted: bool, p: float | None) -> None:
    style = token_style(accepted, p)
    assert set(style) <= set("background-color: rgba(0123456789,.)")
    if p is not None and p >= 0.5:
        assert float(style.rsplit(",", 1)[1].rstrip(")")) >= float(
            token_style(accepted, 0.0).rsplit(",", 1)[1][:-1]
        )
