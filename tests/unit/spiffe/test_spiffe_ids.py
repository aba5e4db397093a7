"""SPIFFE ID and trust-domain parsing: the spec's rules as a table, and properties."""

from __future__ import annotations

import contextlib
import string

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from plastron.errors import InvalidSpiffeId
from plastron.spiffe.ids import SpiffeId, TrustDomain

TD_ALPHABET = string.ascii_lowercase + string.digits + ".-_"
PATH_ALPHABET = string.ascii_letters + string.digits + ".-_"

trust_domains = st.text(TD_ALPHABET, min_size=1, max_size=60)
segments = st.text(PATH_ALPHABET, min_size=1, max_size=20).filter(lambda s: s not in (".", ".."))
paths = st.lists(segments, max_size=8).map(lambda segs: "".join("/" + s for s in segs))


@given(trust_domains, paths)
def test_valid_ids_round_trip(td: str, path: str) -> None:
    text = f"spiffe://{td}{path}"
    sid = SpiffeId.parse(text)
    assert str(sid) == text
    assert sid.trust_domain == TrustDomain(td)
    assert sid.path == path
    assert SpiffeId.parse(str(sid)) == sid


@given(trust_domains)
def test_valid_trust_domains_round_trip(td: str) -> None:
    assert TrustDomain.parse(td).name == td
    assert TrustDomain.parse(f"spiffe://{td}") == TrustDomain(td)
    assert str(TrustDomain(td).id) == f"spiffe://{td}"


@given(st.text(max_size=300))
@example("spiffe://a/\ud800")
@example("spiffe://\udfff")
def test_arbitrary_text_parses_canonically_or_raises_invalid_spiffe_id(text: str) -> None:
    try:
        sid = SpiffeId.parse(text)
    except InvalidSpiffeId:
        return
    assert str(sid) == text  # nothing is normalised: what parses was already canonical


@given(st.text(max_size=300))
def test_arbitrary_text_as_trust_domain_never_raises_anything_else(text: str) -> None:
    with contextlib.suppress(InvalidSpiffeId):
        TrustDomain.parse(text)


# "/" is not here: inside a trust domain it just starts the path.
BAD_CHARS = st.sampled_from(list("ABZ%?#:@ \\\u00e9\u0000\t+=,;*"))


@given(trust_domains, paths, BAD_CHARS, st.data())
def test_a_bad_character_in_the_trust_domain_is_rejected(
    td: str, path: str, bad: str, data: st.DataObject
) -> None:
    pos = data.draw(st.integers(0, len(td)))
    mutated = td[:pos] + bad + td[pos:]
    with pytest.raises(InvalidSpiffeId):
        SpiffeId.parse(f"spiffe://{mutated}{path}")


@given(trust_domains, st.lists(segments, min_size=1, max_size=5), st.data())
def test_a_bad_character_in_the_path_is_rejected(
    td: str, segs: list[str], data: st.DataObject
) -> None:
    bad = data.draw(st.sampled_from(list("%?# :@\\\u00e9\u0000+=,;*")))
    i = data.draw(st.integers(0, len(segs) - 1))
    pos = data.draw(st.integers(0, len(segs[i])))
    segs = [*segs[:i], segs[i][:pos] + bad + segs[i][pos:], *segs[i + 1 :]]
    with pytest.raises(InvalidSpiffeId):
        SpiffeId.parse("spiffe://" + td + "".join("/" + s for s in segs))


INVALID_IDS = {
    "empty": "",
    "no-scheme": "example.org/workload",
    "wrong-scheme": "https://example.org/workload",
    "uppercase-scheme": "SPIFFE://example.org/workload",
    "missing-trust-domain": "spiffe:///workload",
    "uppercase-trust-domain": "spiffe://Example.org/workload",
    "port": "spiffe://example.org:8080/workload",
    "userinfo": "spiffe://user@example.org/workload",
    "userinfo-with-password": "spiffe://user:pw@example.org/workload",
    "query": "spiffe://example.org/workload?x=1",
    "fragment": "spiffe://example.org/workload#frag",
    "query-on-trust-domain": "spiffe://example.org?x=1",
    "fragment-on-trust-domain": "spiffe://example.org#x",
    "trailing-slash": "spiffe://example.org/workload/",
    "trust-domain-trailing-slash": "spiffe://example.org/",
    "empty-segment": "spiffe://example.org//workload",
    "dot-segment": "spiffe://example.org/./workload",
    "dot-dot-segment": "spiffe://example.org/ns/../workload",
    "percent-encoded": "spiffe://example.org/work%20load",
    "percent-encoded-trust-domain": "spiffe://exa%6Dple.org/workload",
    "space-in-path": "spiffe://example.org/work load",
    "non-ascii-path": "spiffe://example.org/caf\u00e9",
    "too-long": "spiffe://example.org/" + "a" * 2040,
    "trust-domain-too-long": "spiffe://" + "a" * 256,
}


@pytest.mark.parametrize("text", INVALID_IDS.values(), ids=INVALID_IDS.keys())
def test_spec_invalid_ids_are_rejected(text: str) -> None:
    with pytest.raises(InvalidSpiffeId):
        SpiffeId.parse(text)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("spiffe://Example.org/w", "uppercase"),
        ("spiffe://example.org:80/w", "port"),
        ("spiffe://u@example.org/w", "userinfo"),
        ("spiffe://example.org/w?q", "query or fragment"),
        ("spiffe://example.org//w", "empty segments"),
        ("spiffe://example.org/../w", "dot segments"),
        ("spiffe://example.org/%41", "percent-encoded"),
        ("spiffe://example.org/w/", "trailing slash"),
        ("spiffe://example.org/" + "a" * 2040, "2048 bytes"),
    ],
)
def test_rejections_name_the_rule(text: str, fragment: str) -> None:
    with pytest.raises(InvalidSpiffeId, match=fragment):
        SpiffeId.parse(text)


def test_id_of_exactly_2048_bytes_is_accepted() -> None:
    prefix = "spiffe://example.org/"
    text = prefix + "a" * (2048 - len(prefix))
    assert str(SpiffeId.parse(text)) == text


def test_trust_domain_parse_refuses_an_id_with_a_path() -> None:
    with pytest.raises(InvalidSpiffeId, match="no path"):
        TrustDomain.parse("spiffe://example.org/workload")
