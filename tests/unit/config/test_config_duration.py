"""Durations in SPIRE/Go form and as integer seconds."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plastron.configs.duration import format_duration, parse_duration
from plastron.errors import ConfigError

td = dt.timedelta


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", td(hours=24)),
        ("90s", td(seconds=90)),
        ("1h30m", td(hours=1, minutes=30)),
        ("500ms", td(milliseconds=500)),
        ("1.5h", td(minutes=90)),
        (".5s", td(milliseconds=500)),
        ("2us", td(microseconds=2)),
        ("2\u00b5s", td(microseconds=2)),
        ("1500ns", td(microseconds=2)),  # rounded to timedelta's microsecond
        ("1h0m0s", td(hours=1)),
        ("0", td(0)),
        ("+5m", td(minutes=5)),
        ("3600", td(hours=1)),  # digit strings are seconds, like quoted ports
        ("1", td(seconds=1)),
        (3600, td(hours=1)),
        (0, td(0)),
    ],
)
def test_accepted_forms(text: str | int, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "bad",
    ["", "h", "1d", "1 h", "-1h", "1h-5m", "1.h.", "1e3s", "abc", "1H", True, 1.5, None, [1]],
)
def test_rejected_forms(bad: object) -> None:
    with pytest.raises(ConfigError, match=re.escape("server.ca_ttl")):
        parse_duration(bad, "server.ca_ttl")


def test_negative_and_huge_are_rejected() -> None:
    with pytest.raises(ConfigError, match="negative"):
        parse_duration(-1, "x")
    with pytest.raises(ConfigError, match="longer than"):
        parse_duration("9999999999h", "x")
    with pytest.raises(ConfigError, match="longer than 64"):
        parse_duration("1" * 65 + "s", "x")


@given(st.integers(min_value=0, max_value=10**9))
def test_integer_seconds_round_trip(seconds: int) -> None:
    value = parse_duration(seconds)
    assert value == td(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


@given(st.integers(0, 1000), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999_999))
def test_go_form_round_trip(h: int, m: int, s: int, us: int) -> None:
    value = td(hours=h, minutes=m, seconds=s, microseconds=us)
    assert parse_duration(format_duration(value)) == value


@given(st.one_of(st.text(max_size=80), st.integers(), st.floats(), st.none(), st.booleans()))
def test_arbitrary_input_is_a_duration_or_config_error(value: object) -> None:
    try:
        result = parse_duration(value, "k")
    except ConfigError:
        return
    assert result >= td(0)
