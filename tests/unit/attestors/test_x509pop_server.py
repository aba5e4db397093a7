"""x509pop, both halves connected in-process through a challenge callback: what is accepted,
what is refused and why. Real keys and certificates (see x509pop_pki)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from x509pop_pki import NOW, Issued, make_ca, make_leaf, new_key, write_files

from plastron.attestors.base import AttestationResult
from plastron.attestors.x509pop.agent import X509PopAgentAttestor
from plastron.attestors.x509pop.config import X509PopAgentConfig, X509PopServerConfig
from plastron.attestors.x509pop.server import X509PopServerAttestor
from plastron.attestors.x509pop.wire import (
    Challenge,
    decode_challenge,
    encode_payload,
    encode_response,
    sign_response,
)
from plastron.clock import ManualClock
from plastron.errors import AttestationFailed, InvalidArgument
from plastron.selector import Selector
from plastron.spiffe.ids import SpiffeId, TrustDomain

TD = TrustDomain("example.org")
ChallengeFn = Callable[[bytes], Awaitable[bytes]]


def sha1(cert: Issued) -> str:
    return hashlib.sha1(cert.der).hexdigest()


@pytest.fixture(scope="module")
def root() -> Issued:
    return make_ca("Test Root")


@pytest.fixture(scope="module")
def inter(root: Issued) -> Issued:
    return make_ca("Test Intermediate", parent=root)


def server_for(root: Issued, tmp_path: Path, **data: Any) -> X509PopServerAttestor:
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(root.pem())
    cfg = X509PopServerConfig.from_plugin_data({"ca_bundle_path": str(bundle), **data})
    return X509PopServerAttestor(cfg, TD, ManualClock(NOW))


def agent_for(node: Issued, tmp_path: Path, intermediates: list[Issued]) -> X509PopAgentAttestor:
    data = write_files(tmp_path / "agent", node, intermediates)
    return X509PopAgentAttestor(X509PopAgentConfig.from_plugin_data(data))


async def attest(server: X509PopServerAttestor, agent: X509PopAgentAttestor) -> AttestationResult:
    return await server.attest(await agent.payload(), agent.answer)


def payload_of(*certs: Issued) -> bytes:
    return encode_payload([c.der for c in certs])


# ---- success ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ec-p256", "ec-p384", "rsa-2048"])
async def test_leaf_with_intermediate_is_attested(
    kind: str, root: Issued, inter: Issued, tmp_path: Path
) -> None:
    node = make_leaf(inter, key=new_key(kind), serial=0x0ABC, cn="node-7")
    result = await attest(server_for(root, tmp_path), agent_for(node, tmp_path, [inter]))
    assert result.agent_id == SpiffeId(TD, f"/spire/agent/x509pop/{sha1(node)}")
    assert result.can_reattest is True
    assert result.selectors == (
        Selector("x509pop", "subject:cn:node-7"),
        Selector("x509pop", f"ca:fingerprint:{sha1(inter)}"),
        Selector("x509pop", f"ca:fingerprint:{sha1(root)}"),
        Selector("x509pop", "serialnumber:0abc"),
    )


async def test_leaf_issued_by_root_directly(root: Issued, tmp_path: Path) -> None:
    node = make_leaf(root)
    result = await attest(server_for(root, tmp_path), agent_for(node, tmp_path, []))
    assert Selector("x509pop", f"ca:fingerprint:{sha1(root)}") in result.selectors


async def test_uri_san_selectors_and_template(root: Issued, inter: Issued, tmp_path: Path) -> None:
    node = make_leaf(
        inter,
        uris=("x509pop://example.org/datacenter/us-east-1", "x509pop://other.org/x/y"),
    )
    server = server_for(
        root,
        tmp_path,
        agent_path_template="/dc/{{ .URISanSelectors.datacenter }}/{{.Subject.CommonName}}",
    )
    result = await attest(server, agent_for(node, tmp_path, [inter]))
    assert result.agent_id == SpiffeId(TD, "/spire/agent/dc/us-east-1/node-7")
    assert Selector("x509pop", "san:datacenter:us-east-1") in result.selectors
    assert not any("other.org" in s.value or s.value.startswith("san:x:") for s in result.selectors)


async def test_max_intermediates_boundary_is_accepted(root: Issued, tmp_path: Path) -> None:
    chain = [root]
    for i in range(4):
        chain.append(make_ca(f"I{i}", parent=chain[-1]))
    node = make_leaf(chain[-1])
    agent = agent_for(node, tmp_path, list(reversed(chain[1:])))
    result = await attest(server_for(root, tmp_path), agent)
    assert len([s for s in result.selectors if s.value.startswith("ca:fingerprint:")]) == 5


# ---- chain and certificate checks ---------------------------------------------------------


async def test_untrusted_ca_is_refused(root: Issued, tmp_path: Path) -> None:
    other = make_ca("Other Root")
    node = make_leaf(other)
    with pytest.raises(AttestationFailed, match="does not lead to a trusted CA"):
        await attest(server_for(root, tmp_path), agent_for(node, tmp_path, []))


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (NOW - dt.timedelta(days=10), NOW - dt.timedelta(seconds=1)),  # expired
        (NOW + dt.timedelta(seconds=1), NOW + dt.timedelta(days=10)),  # not yet valid
    ],
    ids=["expired", "not-yet-valid"],
)
async def test_leaf_outside_validity_is_refused(
    start: dt.datetime, end: dt.datetime, inter: Issued, root: Issued, tmp_path: Path
) -> None:
    node = make_leaf(inter, not_before=start, not_after=end)
    with pytest.raises(AttestationFailed, match="leaf certificate is not valid at 2026-06-01"):
        await attest(server_for(root, tmp_path), agent_for(node, tmp_path, [inter]))


async def test_expired_intermediate_is_refused(root: Issued, tmp_path: Path) -> None:
    old = make_ca("Old", parent=root, not_after=NOW - dt.timedelta(days=1))
    node = make_leaf(old)
    with pytest.raises(AttestationFailed, match="does not lead to a trusted CA"):
        await attest(server_for(root, tmp_path), agent_for(node, tmp_path, [old]))


async def test_intermediate_that_is_not_a_ca_is_refused(root: Issued, tmp_path: Path) -> None:
    fake = make_ca("Not A CA", parent=root, is_ca=False)
    node = make_leaf(fake)
    with pytest.raises(AttestationFailed, match=r"basicConstraints\.cA"):
        await attest(server_for(root, tmp_path), agent_for(node, tmp_path, [fake]))


@pytest.mark.parametrize("present", [True, False], ids=["ku-without-ds", "no-ku"])
async def test_leaf_without_digital_signature_is_refused(
    present: bool, inter: Issued, root: Issued, tmp_path: Path
) -> None:
    node = make_leaf(inter, digital_signature=False, key_usage=present)
    with pytest.raises(AttestationFailed, match="not intended for digital signature use"):
        await attest(server_for(root, tmp_path), agent_for(node, tmp_path, [inter]))


async def test_ca_certificate_as_leaf_is_refused(
    root: Issued, inter: Issued, tmp_path: Path
) -> None:
    agent = agent_for(inter, tmp_path, [])
    with pytest.raises(AttestationFailed, match="leaf certificate is a CA certificate"):
        await attest(server_for(root, tmp_path), agent)


async def test_too_many_intermediates_are_refused_before_parsing(
    root: Issued, tmp_path: Path
) -> None:
    payload = encode_payload([b"not even DER"] * 6)
    with pytest.raises(
        InvalidArgument, match=r"too many intermediate certificates \(5; max_intermediates is 4\)"
    ):
        await server_for(root, tmp_path).attest(payload, _no_challenge)


async def test_max_intermediates_config_is_enforced(
    root: Issued, inter: Issued, tmp_path: Path
) -> None:
    node = make_leaf(inter)
    server = server_for(root, tmp_path, max_intermediates=1)
    payload = payload_of(node, inter, root)
    with pytest.raises(InvalidArgument, match="too many intermediate"):
        await server.attest(payload, _no_challenge)


async def test_oversize_rsa_leaf_is_refused(root: Issued, inter: Issued, tmp_path: Path) -> None:
    node = make_leaf(inter, key=new_key("rsa-3072"))
    server = server_for(root, tmp_path, max_rsa_key_size=2048)
    with pytest.raises(
        InvalidArgument, match="leaf certificate RSA key is 3072 bits; max_rsa_key_size is 2048"
    ):
        await server.attest(payload_of(node, inter), _no_challenge)


async def test_oversize_rsa_intermediate_is_refused(root: Issued, tmp_path: Path) -> None:
    big = make_ca("Big RSA", parent=root, key=new_key("rsa-3072"))
    node = make_leaf(big)
    server = server_for(root, tmp_path, max_rsa_key_size=2048)
    with pytest.raises(InvalidArgument, match="intermediate certificate 0 RSA key is 3072 bits"):
        await server.attest(payload_of(node, big), _no_challenge)


# ---- malformed payloads -------------------------------------------------------------------


async def _no_challenge(blob: bytes) -> bytes:
    raise AssertionError("the server must refuse before challenging")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{not json", "is not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"certificates": []}', "no certificate to attest"),
        (b"{}", "no certificate to attest"),
        (b'{"certificates": "abc"}', "must be a list"),
        (b'{"certificates": [1]}', "certificate 0 must be a base64 string"),
        (b'{"certificates": ["***"]}', "certificate 0 is not valid base64"),
        (b'{"certificates": [], "certificates": []}', "duplicate JSON key"),
        (b'{"certificates": ["AA=="], "extra": 1}', "unknown key 'extra'"),
        (b"\xff\xfe", "is not valid JSON"),
        (b"[" * 60000, "is not valid JSON"),
        (b" " * (64 * 1024 + 1), "at most 65536"),
    ],
)
async def test_malformed_payload_is_refused(
    payload: bytes, message: str, root: Issued, tmp_path: Path
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await server_for(root, tmp_path).attest(payload, _no_challenge)


async def test_truncated_der_is_refused(root: Issued, inter: Issued, tmp_path: Path) -> None:
    node = make_leaf(inter)
    server = server_for(root, tmp_path)
    with pytest.raises(InvalidArgument, match="leaf certificate cannot be parsed"):
        await server.attest(encode_payload([node.der[:-10], inter.der]), _no_challenge)
    with pytest.raises(InvalidArgument, match="intermediate certificate 0 cannot be parsed"):
        await server.attest(
            encode_payload([node.der, inter.der[: len(inter.der) // 2]]), _no_challenge
        )


# ---- the proof of possession --------------------------------------------------------------


def answer_with(key: Any, server_nonce: bytes | None = None) -> ChallengeFn:
    """A challenge answerer that signs with ``key``, optionally over a different nonce."""

    async def answer(blob: bytes) -> bytes:
        challenge = decode_challenge(blob)
        if server_nonce is not None:
            challenge = Challenge(challenge.kind, server_nonce)
        return encode_response(sign_response(key, challenge, os.urandom(32)))

    return answer


@pytest.mark.parametrize("kind", ["ec-p256", "rsa-2048"])
async def test_signature_by_another_key_is_refused(
    kind: str, root: Issued, inter: Issued, tmp_path: Path
) -> None:
    node = make_leaf(inter, key=new_key(kind, slot=1))
    imposter = new_key(kind, slot=2)
    with pytest.raises(AttestationFailed, match="signature does not verify"):
        await server_for(root, tmp_path).attest(payload_of(node, inter), answer_with(imposter))


@pytest.mark.parametrize("kind", ["ec-p256", "rsa-2048"])
async def test_response_to_a_different_nonce_is_refused(
    kind: str, root: Issued, inter: Issued, tmp_path: Path
) -> None:
    node = make_leaf(inter, key=new_key(kind, slot=1))
    answer = answer_with(node.key, server_nonce=os.urandom(32))
    with pytest.raises(AttestationFailed, match="signature does not verify"):
        await server_for(root, tmp_path).attest(payload_of(node, inter), answer)


async def test_replayed_response_is_refused(root: Issued, inter: Issued, tmp_path: Path) -> None:
    node = make_leaf(inter)
    agent = agent_for(node, tmp_path, [inter])
    server = server_for(root, tmp_path)
    recorded: list[bytes] = []

    async def recording(blob: bytes) -> bytes:
        recorded.append(await agent.answer(blob))
        return recorded[-1]

    payload = await agent.payload()
    await server.attest(payload, recording)

    async def replay(blob: bytes) -> bytes:
        return recorded[0]

    with pytest.raises(AttestationFailed, match="signature does not verify"):
        await server.attest(payload, replay)


async def test_ecdsa_answer_to_rsa_challenge_is_refused(
    root: Issued, inter: Issued, tmp_path: Path
) -> None:
    node = make_leaf(inter, key=new_key("rsa-2048", slot=1))
    ec_key = new_key("ec-p256", slot=3)

    async def wrong_kind(blob: bytes) -> bytes:
        nonce = decode_challenge(blob).nonce
        return encode_response(sign_response(ec_key, Challenge("ecdsa", nonce), os.urandom(32)))

    with pytest.raises(AttestationFailed, match="expected an rsa challenge response, got ecdsa"):
        await server_for(root, tmp_path).attest(payload_of(node, inter), wrong_kind)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (b"nonsense", "challenge response is not valid JSON"),
        (b"{}", "exactly one of rsa_signature, ecdsa_signature"),
        (
            json.dumps({"ecdsa_signature": {"nonce": _b64(b"x" * 31), "r": "", "s": ""}}).encode(),
            "nonce is 31 bytes; it must be 32",
        ),
        (
            json.dumps(
                {"ecdsa_signature": {"nonce": _b64(b"x" * 32), "r": _b64(b"1" * 67), "s": ""}}
            ).encode(),
            "r is longer than 66 bytes",
        ),
        (
            json.dumps(
                {"ecdsa_signature": {"nonce": _b64(b"x" * 32), "r": "AQ==", "s": "AQ=="}}
            ).encode(),
            "signature does not verify",
        ),
    ],
)
async def test_malformed_response_is_refused(
    response: bytes, message: str, root: Issued, inter: Issued, tmp_path: Path
) -> None:
    node = make_leaf(inter)

    async def answer(blob: bytes) -> bytes:
        return response

    with pytest.raises((AttestationFailed, InvalidArgument), match=message):
        await server_for(root, tmp_path).attest(payload_of(node, inter), answer)


async def test_each_challenge_carries_a_fresh_32_byte_nonce(
    root: Issued, inter: Issued, tmp_path: Path
) -> None:
    node = make_leaf(inter)
    agent = agent_for(node, tmp_path, [inter])
    server = server_for(root, tmp_path)
    seen: list[bytes] = []

    async def spy(blob: bytes) -> bytes:
        wire = json.loads(blob)
        assert wire["rsa_signature"] is None and set(wire) == {"rsa_signature", "ecdsa_signature"}
        seen.append(decode_challenge(blob).nonce)
        return await agent.answer(blob)

    payload = await agent.payload()
    for _ in range(3):
        await server.attest(payload, spy)
    assert len(set(seen)) == 3 and all(len(n) == 32 for n in seen)


# ---- agent ID template --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cn", "refusal"),
    [
        ("Node 7", "not a canonical agent ID path"),
        ("node%41", "not a canonical agent ID path"),
        ("", "not a canonical agent ID path"),
        ("a/../b", "holds '/'; an attested value must fill exactly one path segment"),
        ("x/", "holds '/'"),
        ("a/b", "field .Subject.CommonName is 'a/b', which holds '/'"),
    ],
)
async def test_non_canonical_agent_id_is_rejected_not_normalised(
    cn: str, refusal: str, root: Issued, inter: Issued, tmp_path: Path
) -> None:
    node = make_leaf(inter, cn=cn or None)
    server = server_for(root, tmp_path, agent_path_template="/cn/{{ .Subject.CommonName }}")
    with pytest.raises(AttestationFailed, match=re.escape(refusal)):
        await attest(server, agent_for(node, tmp_path, [inter]))


async def test_uri_san_value_decoding_to_a_slash_is_refused(
    root: Issued, inter: Issued, tmp_path: Path
) -> None:
    """``%2F`` in the SAN decodes to '/': rack 'a/b' with unit 'c' would be rack 'a', unit 'b/c'."""
    node = make_leaf(
        inter, uris=("x509pop://example.org/rack/a%2Fb", "x509pop://example.org/unit/c")
    )
    template = "/{{ .URISanSelectors.rack }}/{{ .URISanSelectors.unit }}"
    server = server_for(root, tmp_path, agent_path_template=template)
    with pytest.raises(AttestationFailed, match=r"field \.URISanSelectors\.rack is 'a/b'"):
        await attest(server, agent_for(node, tmp_path, [inter]))


async def test_missing_uri_san_key_fails_attestation(
    root: Issued, inter: Issued, tmp_path: Path
) -> None:
    node = make_leaf(inter)
    server = server_for(root, tmp_path, agent_path_template="/{{ .URISanSelectors.rack }}")
    with pytest.raises(AttestationFailed, match="no x509pop URI SAN with key 'rack'"):
        await attest(server, agent_for(node, tmp_path, [inter]))


async def test_serial_and_trust_domain_fields(root: Issued, inter: Issued, tmp_path: Path) -> None:
    node = make_leaf(inter, serial=0xABC)
    template = "/{{ .PluginName }}/{{ .TrustDomain }}/{{ .SerialNumberHex }}"
    result = await attest(
        server_for(root, tmp_path, agent_path_template=template), agent_for(node, tmp_path, [inter])
    )
    assert str(result.agent_id) == "spiffe://example.org/spire/agent/x509pop/example.org/0abc"


async def test_der_payload_matches_certificate_bytes(
    root: Issued, inter: Issued, tmp_path: Path
) -> None:
    node = make_leaf(inter)
    payload = json.loads(await agent_for(node, tmp_path, [inter]).payload())
    assert payload == {
        "certificates": [
            _b64(node.cert.public_bytes(serialization.Encoding.DER)),
            _b64(inter.cert.public_bytes(serialization.Encoding.DER)),
        ]
    }


async def test_ed25519_leaf_is_refused(root: Issued, inter: Issued, tmp_path: Path) -> None:
    node = make_leaf(inter, key=ed25519.Ed25519PrivateKey.generate())  # type: ignore[arg-type]
    with pytest.raises(AttestationFailed, match="leaf key must be RSA or EC"):
        await server_for(root, tmp_path).attest(payload_of(node, inter), _no_challenge)


async def test_cancelled_attestation_leaves_no_task_behind(
    root: Issued, inter: Issued, tmp_path: Path
) -> None:
    # what the gRPC layer does at the challenge deadline: the attest task is cancelled
    node = make_leaf(inter)
    asked = asyncio.Event()

    async def silent(blob: bytes) -> bytes:
        asked.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    task = asyncio.create_task(server_for(root, tmp_path).attest(payload_of(node, inter), silent))
    await asked.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert asyncio.all_tasks() == {asyncio.current_task()}


@pytest.fixture(scope="module")
def mutation_target(inter: Issued) -> Issued:
    return make_leaf(inter, serial=77)


# A mutation can make the serial non-positive: cryptography warns that it will refuse such
# certificates one day, and the attestor refuses them today (tested on its own).
@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
async def test_mutated_leaf_der_is_refused_cleanly(
    data: st.DataObject, mutation_target: Issued, root: Issued, inter: Issued, tmp_path: Path
) -> None:
    node = mutation_target
    der = bytearray(node.der)
    places = data.draw(st.lists(st.integers(0, len(der) - 1), min_size=1, max_size=3, unique=True))
    for i in places:
        der[i] ^= data.draw(st.integers(1, 255))
    server = server_for(root, tmp_path)
    # any change breaks parsing or the issuer's signature: a typed refusal, never a crash
    with pytest.raises((InvalidArgument, AttestationFailed)):
        await server.attest(encode_payload([bytes(der), inter.der]), answer_with(node.key))


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
@pytest.mark.parametrize("serial", [b"\x00", b"\xff"])  # 0 and -1 (RFC 5280: positive only)
async def test_non_positive_serial_is_refused(
    serial: bytes, mutation_target: Issued, root: Issued, inter: Issued, tmp_path: Path
) -> None:
    node = mutation_target
    der = node.der.replace(b"\x02\x01\x4d", b"\x02\x01" + serial, 1)  # serial 77, one byte
    assert der != node.der
    with pytest.raises(InvalidArgument, match="leaf certificate serial number is not positive"):
        await server_for(root, tmp_path).attest(
            encode_payload([der, inter.der]), answer_with(node.key)
        )
