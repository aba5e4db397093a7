"""Selector.parse: type:value, the value may hold ':'; nothing else escapes as an exception."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plastron.errors import InvalidSelector
from plastron.selector import MAX_SELECTOR_TYPE, MAX_SELECTOR_VALUE, Selector

types = st.text(min_size=1, max_size=MAX_SELECTOR_TYPE).filter(lambda t: ":" not in t)
values = st.text(min_size=1, max_size=MAX_SELECTOR_VALUE)


@given(types, values)
def test_valid_selectors_round_trip(kind: str, value: str) -> None:
    sel = Selector.parse(f"{kind}:{value}")
    assert (sel.type, sel.value) == (kind, value)
    assert Selector.parse(str(sel)) == sel


@given(st.text(max_size=2000))
def test_arbitrary_text_parses_or_raises_invalid_selector(text: str) -> None:
    try:
        sel = Selector.parse(text)
    except InvalidSelector:
        return
    assert str(sel) == text


@pytest.mark.parametrize(
    "text",
    ["", "unix", ":uid:1000", "unix:", "x" * (MAX_SELECTOR_TYPE + 1) + ":v"],
)
def test_malformed_selectors_are_rejected(text: str) -> None:
    with pytest.raises(InvalidSelector):
        Selector.parse(text)


def test_value_may_contain_colons() -> None:
    assert Selector.parse("unix:uid:1000") == Selector("unix", "uid:1000")
