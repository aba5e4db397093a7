"""The JWT audience rule every end applies (Workload API, server API, CA)."""

from __future__ import annotations

import pytest

from plastron.errors import InvalidArgument
from plastron.spiffe.limits import MAX_JWT_AUDIENCE_CHARS, MAX_JWT_AUDIENCES, check_jwt_audience


def test_audience_within_limits_is_kept_in_order_without_repeats() -> None:
    assert check_jwt_audience(["b", "a", "b"]) == ("b", "a")
    full = [f"a{i}" for i in range(MAX_JWT_AUDIENCES)]
    assert check_jwt_audience(full) == tuple(full)
    assert check_jwt_audience(["x" * MAX_JWT_AUDIENCE_CHARS]) == ("x" * MAX_JWT_AUDIENCE_CHARS,)


@pytest.mark.parametrize(
    ("audience", "message"),
    [
        ([], "audience must be specified"),
        ("aud", "not a string"),
        ([f"a{i}" for i in range(33)], "audience: 33 values; at most 32 are allowed"),
        (["a"] * 33, "audience: 33 values; at most 32 are allowed"),
        ([""], "must be 1..1024 characters"),
        (["x" * 1025], "must be 1..1024 characters"),
    ],
)
def test_audience_outside_limits_is_refused(audience: list[str], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        check_jwt_audience(audience)
