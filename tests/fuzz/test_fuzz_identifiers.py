"""Bad input at the identifier parsers: SPIFFE IDs, trust domains, selectors, PKCS#11 URIs and
TCTI strings. Each is parsed strictly: a clean InvalidArgument (or subclass) or a value that
prints back exactly as it was written (nothing is normalised)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from plastron.hsm.uri import parse_pkcs11_uri
from plastron.selector import Selector
from plastron.spiffe.ids import SpiffeId, TrustDomain
from plastron.tpm.tcti import Tcti
from tests.fuzz.fuzzing import check, fuzz_settings

# Characters that matter to these grammars, plus anything at all.
_TRICKY = st.sampled_from([*"/.:%@?#;&=-_ \\\t\n\x00AZaz09", "\u00e9", "\u2215", "%2F", "..", "//"])
tricky_text = st.lists(_TRICKY | st.characters(), max_size=40).map("".join)
# Mostly canonical IDs, so the accepted side is exercised too.
canonical_ids = st.builds(
    lambda td, segs: f"spiffe://{td}{''.join('/' + s for s in segs)}",
    st.text(alphabet="abcz019.-_", min_size=1, max_size=12),
    st.lists(st.text(alphabet="abcXYZ019.-_", min_size=1, max_size=8), max_size=4),
)
segments = st.lists(st.text(alphabet="abcXYZ019.-_%/:", min_size=0, max_size=8), max_size=5)
spiffe_like = st.builds(
    lambda scheme, td, segs, tail: f"{scheme}{td}{''.join('/' + s for s in segs)}{tail}",
    st.sampled_from(["spiffe://", "SPIFFE://", "spiffe:/", "", "http://"]),
    st.text(alphabet="abcXY019.-_:@", max_size=12),
    segments,
    st.sampled_from(["", "/", "?q", "#f", "%41"]),
)


@fuzz_settings(300)
@given(text=canonical_ids | spiffe_like | tricky_text)
def test_spiffe_ids(text: str) -> None:
    sid = check("SPIFFE ID", SpiffeId.parse, text)
    if sid is not None:
        assert str(sid) == text


@fuzz_settings(150)
@given(text=st.text(alphabet="abcXY019.-_:@/", max_size=20) | tricky_text)
def test_trust_domains(text: str) -> None:
    td = check("trust domain", TrustDomain.parse, text)
    if td is not None:
        assert text in (td.name, f"spiffe://{td.name}")


@fuzz_settings(200)
@given(text=st.builds("{}:{}".format, tricky_text, tricky_text) | tricky_text)
def test_selectors(text: str) -> None:
    selector = check("selector", Selector.parse, text)
    if selector is not None:
        assert str(selector) == text


pkcs11_like = st.builds(
    lambda path, query: f"pkcs11:{path}" + (f"?{query}" if query else ""),
    st.lists(
        st.builds(
            "{}={}".format,
            st.sampled_from(["token", "object", "serial", "slot-id", "type", "id", "bogus"]),
            tricky_text,
        ),
        max_size=4,
    ).map(";".join),
    st.lists(
        st.builds(
            "{}={}".format,
            st.sampled_from(["pin-source", "module-path", "pin-value", "x"]),
            tricky_text,
        ),
        max_size=3,
    ).map("&".join),
)


@fuzz_settings(200)
@given(text=pkcs11_like | tricky_text)
def test_pkcs11_uris(text: str) -> None:
    check("PKCS#11 URI", parse_pkcs11_uri, text)


tcti_like = st.builds(
    "{}:{}".format,
    st.sampled_from(["device", "swtpm", "tabrmd", "mssim", ""]),
    st.lists(
        tricky_text
        | st.sampled_from(
            ["path=/tmp/s", "host=x", "port=2321", "bus_type=session", "/dev/tpmrm0"]
        ),
        max_size=3,
    ).map(",".join),
)


@fuzz_settings(150)
@given(text=tcti_like | tricky_text)
def test_tcti_strings(text: str) -> None:
    tcti = check("TCTI string", Tcti.parse, text)
    if tcti is not None:
        assert Tcti.parse(str(tcti)) == tcti
