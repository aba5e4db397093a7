"""The protocol limits every end applies: JWT audiences (Workload API, server API, CA), DNS
names, TTLs and page sizes."""

from __future__ import annotations

import pytest

from plastron.errors import InvalidArgument
from plastron.wire.limits import (
    MAX_DNS_NAME_CHARS,
    MAX_DNS_NAMES,
    MAX_JWT_AUDIENCE_CHARS,
    MAX_JWT_AUDIENCES,
    MAX_PAGE_SIZE,
    MAX_TTL_SECONDS,
    check_dns_names,
    check_jwt_audience,
    check_page_size,
    check_ttl,
)


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


def test_dns_names_within_limits_are_kept() -> None:
    names = [f"w{i}.example.org" for i in range(MAX_DNS_NAMES)]
    assert check_dns_names(names) == tuple(names)
    assert check_dns_names(["a" * MAX_DNS_NAME_CHARS]) == ("a" * MAX_DNS_NAME_CHARS,)
    assert check_dns_names([]) == ()


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ("example.org", "not a string"),
        ([f"w{i}" for i in range(MAX_DNS_NAMES + 1)], "101 DNS names exceed the limit of 100"),
        ([""], "must be 1..253 characters"),
        (["a" * (MAX_DNS_NAME_CHARS + 1)], "must be 1..253 characters"),
        (["bad name"], "must be ASCII without whitespace"),
        (["bücher.example"], "must be ASCII without whitespace"),
    ],
)
def test_dns_names_outside_limits_are_refused(names: list[str], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        check_dns_names(names)


def test_ttl_limits() -> None:
    assert check_ttl(0) == 0
    assert check_ttl(MAX_TTL_SECONDS) == MAX_TTL_SECONDS
    with pytest.raises(InvalidArgument, match=r"^entry.ttl: must not be negative, got -1$"):
        check_ttl(-1, "entry.ttl")
    with pytest.raises(InvalidArgument, match=f"ttl: {MAX_TTL_SECONDS + 1}s exceeds the limit"):
        check_ttl(MAX_TTL_SECONDS + 1)
    with pytest.raises(InvalidArgument, match="must be an integer number of seconds"):
        check_ttl(True)


def test_page_size_limits() -> None:
    assert check_page_size(0) == 0
    assert check_page_size(MAX_PAGE_SIZE) == MAX_PAGE_SIZE
    with pytest.raises(InvalidArgument, match="page_size: must not be negative"):
        check_page_size(-1)
    with pytest.raises(InvalidArgument, match="page_size: 10001 exceeds the maximum of 10000"):
        check_page_size(MAX_PAGE_SIZE + 1)
