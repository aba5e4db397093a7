"""Every wire conversion round-trips: a value turned into its message and back is the same value
(SPIFFE IDs, trust domains, selectors, public keys, bundles, SVID chains, JWT-SVIDs, entries as
the server and as the agent read them), and a message carries what the value holds."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from plastron.agent.wire import entry_from_proto as agent_entry_from_proto
from plastron.keymanager import PrivateKey, PublicKey
from plastron.proto.spire.api.types import bundle_pb2, entry_pb2
from plastron.records import AttestedNode, RegistrationEntry
from plastron.selector import Selector
from plastron.spiffe.bundle import Bundle, JwtAuthority, X509Authority
from plastron.spiffe.ids import SpiffeId, TrustDomain
from plastron.spiffe.jwtsvid import mint_jwt_svid, parse_jwt_svid_insecure
from plastron.wire.bundles import bundle_from_proto, bundle_to_proto
from plastron.wire.entries import agent_to_proto, entry_from_proto, entry_to_proto
from plastron.wire.ids import spiffe_id_from_proto, spiffe_id_to_proto, trust_domain_from_text
from plastron.wire.keys import public_key_from_der, spki_der
from plastron.wire.limits import (
    MAX_DNS_NAMES,
    MAX_HINT_CHARS,
    MAX_JWT_AUDIENCES,
    MAX_TTL_SECONDS,
)
from plastron.wire.selectors import selector_from_proto, selector_to_proto, selectors_from_proto
from plastron.wire.svids import (
    chain_from_proto,
    jwt_svid_to_proto,
    x509_svid_der_to_proto,
    x509_svid_to_proto,
)

TD = TrustDomain("example.org")
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
INT64_MAX = (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1


# ---- a small fixed PKI to draw from (key generation is too slow for every example) ---------


@functools.cache
def private_keys() -> tuple[PrivateKey, ...]:
    return (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP384R1()),
        ec.generate_private_key(ec.SECP521R1()),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


@functools.cache
def certificates() -> tuple[x509.Certificate, ...]:
    out = []
    for i, key in enumerate(private_keys()):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ca{i}")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(i + 1)
            .not_valid_before(NOW)
            .not_valid_after(NOW + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        out.append(cert)
    return tuple(out)


def public_keys() -> st.SearchStrategy[PublicKey]:
    return st.sampled_from([k.public_key() for k in private_keys()])


# ---- strategies -----------------------------------------------------------------------------

trust_domains = st.from_regex(r"[a-z0-9]([a-z0-9._-]{0,30}[a-z0-9])?", fullmatch=True).map(
    TrustDomain
)
segments = st.from_regex(r"[A-Za-z0-9._-]{1,12}", fullmatch=True).filter(
    lambda s: s not in {".", ".."}
)
paths = st.lists(segments, max_size=5).map(lambda parts: "".join(f"/{p}" for p in parts))
spiffe_ids = st.builds(SpiffeId, trust_domains, paths)
workload_paths = paths.filter(lambda p: p != "" and not SpiffeId(TD, p).is_reserved())
selector_texts = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40
)
selectors = st.builds(Selector, selector_texts.filter(lambda t: ":" not in t), selector_texts)
whole_seconds = st.integers(1, 4_000_000_000).map(lambda s: dt.datetime.fromtimestamp(s, dt.UTC))
key_ids = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)
dns_labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
dns_names = st.lists(dns_labels, min_size=1, max_size=4).map(".".join)


@st.composite
def bundles(draw: st.DrawFn) -> Bundle:
    certs = draw(st.lists(st.sampled_from(certificates()), max_size=4, unique=True))
    kids = draw(st.lists(key_ids, max_size=4, unique=True))
    jwts = tuple(
        JwtAuthority(kid, draw(public_keys()), draw(st.none() | whole_seconds), draw(st.booleans()))
        for kid in kids
    )
    return Bundle(
        trust_domain=draw(trust_domains),
        x509_authorities=tuple(X509Authority(c, draw(st.booleans())) for c in certs),
        jwt_authorities=jwts,
        refresh_hint=draw(st.none() | st.integers(1, INT64_MAX)),
        sequence_number=draw(st.integers(0, UINT64_MAX)),
    )


@st.composite
def entries(draw: st.DrawFn) -> RegistrationEntry:
    """An entry as the server stores it: sorted unique selectors and federated domains."""
    ttls = st.integers(0, MAX_TTL_SECONDS)
    return RegistrationEntry(
        entry_id=draw(st.from_regex(r"[A-Za-z0-9-]{0,40}", fullmatch=True)),
        spiffe_id=SpiffeId(TD, draw(workload_paths)),
        parent_id=SpiffeId(TD, draw(paths.filter(bool))),
        selectors=tuple(sorted(set(draw(st.lists(selectors, min_size=1, max_size=5))))),
        x509_svid_ttl=draw(ttls),
        jwt_svid_ttl=draw(ttls),
        federates_with=tuple(
            sorted(set(draw(st.lists(trust_domains.filter(lambda td: td != TD), max_size=3))))
        ),
        admin=draw(st.booleans()),
        downstream=draw(st.booleans()),
        expires_at=draw(st.integers(0, INT64_MAX)),
        dns_names=tuple(draw(st.lists(dns_names, max_size=min(5, MAX_DNS_NAMES)))),
        store_svid=draw(st.booleans()),
        hint=draw(st.text(max_size=min(64, MAX_HINT_CHARS))),
    )


# ---- round trips ----------------------------------------------------------------------------


@given(spiffe_ids)
def test_spiffe_ids(sid: SpiffeId) -> None:
    assert spiffe_id_from_proto(spiffe_id_to_proto(sid), "id") == sid


@given(trust_domains)
def test_trust_domains(td: TrustDomain) -> None:
    assert trust_domain_from_text(td.name, "td") == td
    assert trust_domain_from_text(str(td.spiffe_id("")), "td") == td


@given(st.lists(selectors, max_size=10))
def test_selectors(sels: list[Selector]) -> None:
    msgs = [selector_to_proto(s) for s in sels]
    assert [selector_from_proto(m, "s") for m in msgs] == sels
    assert selectors_from_proto(msgs, "s") == tuple(sels)


@given(public_keys())
def test_public_keys(key: PublicKey) -> None:
    assert spki_der(public_key_from_der(spki_der(key))) == spki_der(key)


@settings(max_examples=50)
@given(bundles())
def test_bundles(bundle: Bundle) -> None:
    msg = bundle_pb2.Bundle.FromString(bundle_to_proto(bundle).SerializeToString())
    assert bundle_from_proto(msg) == bundle


def test_a_refresh_hint_beyond_the_message_field_is_the_largest_it_holds() -> None:
    bundle = Bundle(TD, refresh_hint=UINT64_MAX)
    assert bundle_from_proto(bundle_to_proto(bundle)).refresh_hint == INT64_MAX


@settings(max_examples=50)
@given(bundles())
def test_a_bundle_mask_keeps_only_its_fields(bundle: Bundle) -> None:
    msg = bundle_to_proto(bundle, bundle_pb2.BundleMask(jwt_authorities=True))
    assert msg.trust_domain == bundle.trust_domain.name
    assert not msg.x509_authorities and not msg.refresh_hint and not msg.sequence_number
    assert bundle_from_proto(msg).jwt_authorities == bundle.jwt_authorities


@settings(max_examples=50)
@given(
    st.lists(st.sampled_from(certificates()), min_size=1, max_size=4),
    spiffe_ids,
    st.text(max_size=20),
)
def test_x509_svid_chains(chain: list[x509.Certificate], sid: SpiffeId, hint: str) -> None:
    msg = x509_svid_to_proto(chain, sid, hint)
    assert chain_from_proto(msg) == chain
    assert spiffe_id_from_proto(msg.id, "id") == sid and msg.hint == hint
    assert msg.expires_at == int(chain[0].not_valid_after_utc.timestamp())
    ders = list(msg.cert_chain)
    again = x509_svid_der_to_proto(ders, sid, chain[0].not_valid_after_utc, hint)
    assert again == msg


@settings(max_examples=50)
@given(
    workload_paths,
    st.lists(st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True), min_size=1, max_size=4),
    st.integers(1, 86_400),
    st.text(max_size=20),
)
def test_jwt_svids(path: str, audience: list[str], ttl: int, hint: str) -> None:
    assert len(audience) <= MAX_JWT_AUDIENCES
    sid = SpiffeId(TD, path)
    token = mint_jwt_svid(
        spiffe_id=sid,
        audience=tuple(audience),
        issued_at=NOW,
        expires_at=NOW + dt.timedelta(seconds=ttl),
        key=private_keys()[0],
        key_id="k1",
    )
    msg = jwt_svid_to_proto(token, sid, hint)
    parsed = parse_jwt_svid_insecure(msg.token)
    assert parsed.spiffe_id == spiffe_id_from_proto(msg.id, "id") == sid
    assert msg.expires_at == int(parsed.expires_at.timestamp()) == int(NOW.timestamp()) + ttl
    assert msg.issued_at == int(NOW.timestamp()) and msg.hint == hint


@settings(max_examples=100)
@given(entries())
def test_entries_as_the_server_reads_them(entry: RegistrationEntry) -> None:
    msg = entry_pb2.Entry.FromString(entry_to_proto(entry).SerializeToString())
    assert entry_from_proto(msg, TD) == entry


@settings(max_examples=100)
@given(entries(), st.integers(0, INT64_MAX), st.integers(0, INT64_MAX))
def test_entries_as_the_agent_reads_them(
    entry: RegistrationEntry, revision: int, created_at: int
) -> None:
    stored = dataclasses.replace(
        entry, entry_id=entry.entry_id or "e", revision_number=revision, created_at=created_at
    )
    msg = entry_to_proto(stored)
    assert (msg.revision_number, msg.created_at) == (revision, created_at)
    seen = agent_entry_from_proto(msg)
    assert seen.entry_id == stored.entry_id and seen.spiffe_id == stored.spiffe_id
    assert seen.selectors == frozenset(stored.selectors)
    assert seen.federates_with == frozenset(stored.federates_with)
    assert seen.dns_names == stored.dns_names and seen.hint == stored.hint
    assert seen.revision == revision


@settings(max_examples=50)
@given(entries())
def test_an_entry_mask_keeps_only_its_fields(entry: RegistrationEntry) -> None:
    msg = entry_to_proto(entry, entry_pb2.EntryMask(selectors=True, hint=True))
    assert msg.id == entry.entry_id and msg.hint == entry.hint
    assert tuple(Selector(s.type, s.value) for s in msg.selectors) == entry.selectors
    assert not msg.HasField("spiffe_id") and not msg.dns_names and not msg.x509_svid_ttl


@given(
    st.builds(
        AttestedNode,
        spiffe_id=st.just(SpiffeId(TD, "/spire/agent/x/y")),
        attestation_type=st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
        cert_serial=st.from_regex(r"[0-9a-f]{0,32}", fullmatch=True),
        cert_not_after=st.integers(0, INT64_MAX),
        selectors=st.lists(selectors, max_size=5).map(tuple),
        can_reattest=st.booleans(),
        agent_version=st.text(max_size=16),
    ),
)
def test_agents(node: AttestedNode) -> None:
    msg = agent_to_proto(node)
    assert spiffe_id_from_proto(msg.id, "id") == node.spiffe_id
    assert msg.attestation_type == node.attestation_type
    assert msg.x509svid_serial_number == node.cert_serial
    assert msg.x509svid_expires_at == node.cert_not_after
    assert selectors_from_proto(msg.selectors, "s") == node.selectors
    assert msg.banned == (node.cert_serial == "")
    assert msg.can_reattest == node.can_reattest and msg.agent_version == node.agent_version
