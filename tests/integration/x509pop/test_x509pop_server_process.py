"""x509pop against a real ``plastron-server run`` process, over TLS through AttestAgent: the
agent half attests with EC and RSA leaves behind an intermediate; every refusal carries a
precise message and leaves no node record; an agent that never answers is dropped."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from x509pop_pki import Issued, make_ca, make_leaf, new_key, write_files
from x509pop_processes import Answer, X509PopServer

from plastron.attestors.x509pop.agent import X509PopAgentAttestor
from plastron.attestors.x509pop.config import X509PopAgentConfig
from plastron.attestors.x509pop.server import serial_number_hex
from plastron.attestors.x509pop.wire import (
    Challenge,
    decode_challenge,
    encode_payload,
    encode_response,
    sign_response,
)

# The certificates must be valid now: the server process runs on the system clock.
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def pki() -> tuple[Issued, Issued]:
    root = make_ca("Proc Root", not_before=NOW - dt.timedelta(days=1))
    return root, make_ca("Proc Inter", parent=root, not_before=NOW - dt.timedelta(days=1))


@pytest.fixture(scope="module")
def server(pki: tuple[Issued, Issued]) -> Iterator[X509PopServer]:
    base = Path(tempfile.mkdtemp(prefix="pl-x5-", dir="/tmp"))  # short: Unix socket paths
    (base / "ca.pem").write_bytes(pki[0].pem())
    proc = X509PopServer(
        base,
        f'ca_bundle_path = "{base}/ca.pem"\n max_rsa_key_size = 2048',
        challenge_timeout="2s",
    )
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()
        shutil.rmtree(base, ignore_errors=True)


def leaf(inter: Issued, **kw: object) -> Issued:
    kw.setdefault("not_before", NOW - dt.timedelta(hours=1))
    kw.setdefault("not_after", NOW + dt.timedelta(days=30))
    return make_leaf(inter, **kw)  # type: ignore[arg-type]


def agent(node: Issued, intermediates: list[Issued], tmp_path: Path) -> X509PopAgentAttestor:
    data = write_files(tmp_path / "agent", node, intermediates)
    return X509PopAgentAttestor(X509PopAgentConfig.from_plugin_data(data))


def fp(cert: Issued) -> str:
    return hashlib.sha1(cert.der).hexdigest()


async def agent_ids(server: X509PopServer) -> set[str]:
    return {f"spiffe://{a.id.trust_domain}{a.id.path}" for a in await server.agents()}


@pytest.mark.parametrize("kind", ["ec-p256", "rsa-2048"])
async def test_attest_and_reattest(
    kind: str, server: X509PopServer, pki: tuple[Issued, Issued], tmp_path: Path
) -> None:
    root, inter = pki
    node = leaf(inter, key=new_key(kind, slot=20), cn=f"proc-{kind}")
    a = agent(node, [inter], tmp_path)
    out = await server.attest(await a.payload(), a.answer)
    expected = f"spiffe://example.org/spire/agent/x509pop/{fp(node)}"
    assert str(out.spiffe_id) == expected and out.reattestable and len(out.challenges) == 1
    [stored] = [x for x in await server.agents() if x.id.path == out.spiffe_id.path]
    assert {f"{s.type}:{s.value}" for s in stored.selectors} == {
        f"x509pop:subject:cn:proc-{kind}",
        f"x509pop:ca:fingerprint:{fp(inter)}",
        f"x509pop:ca:fingerprint:{fp(root)}",
        f"x509pop:serialnumber:{serial_number_hex(node.cert)}",
    }
    again = await server.attest(await a.payload(), a.answer)
    assert again.spiffe_id == out.spiffe_id


def scripted(key: object, nonce: bytes | None = None) -> Answer:
    async def answer(blob: bytes) -> bytes:
        c = decode_challenge(blob)
        return encode_response(
            sign_response(key, Challenge(c.kind, nonce or c.nonce), os.urandom(32))
        )  # type: ignore[arg-type]

    return answer


async def refused(
    server: X509PopServer, payload: bytes, answer: Answer, status: Status, message: str
) -> None:
    before = await agent_ids(server)
    with pytest.raises(GRPCError) as err:
        await server.attest(payload, answer)
    assert err.value.status == status, err.value
    assert message in (err.value.message or ""), err.value.message
    assert await agent_ids(server) == before  # no node record


async def never(blob: bytes) -> bytes:
    raise AssertionError("no challenge expected")


async def test_refusals_leave_no_node_record(
    server: X509PopServer, pki: tuple[Issued, Issued], tmp_path: Path
) -> None:
    _, inter = pki
    node = leaf(inter, key=new_key("ec-p256", slot=21))
    good = encode_payload([node.der, inter.der])
    deny, bad = Status.PERMISSION_DENIED, Status.INVALID_ARGUMENT

    untrusted = make_ca("Proc Other Root", not_before=NOW - dt.timedelta(days=1))
    stranger = leaf(untrusted)
    await refused(
        server, encode_payload([stranger.der]), never, deny, "does not lead to a trusted CA"
    )
    expired = leaf(
        inter, not_before=NOW - dt.timedelta(days=2), not_after=NOW - dt.timedelta(days=1)
    )
    await refused(
        server,
        encode_payload([expired.der, inter.der]),
        never,
        deny,
        "leaf certificate is not valid at",
    )
    future = leaf(
        inter, not_before=NOW + dt.timedelta(days=1), not_after=NOW + dt.timedelta(days=2)
    )
    await refused(
        server,
        encode_payload([future.der, inter.der]),
        never,
        deny,
        "leaf certificate is not valid at",
    )
    no_ds = leaf(inter, digital_signature=False)
    await refused(
        server,
        encode_payload([no_ds.der, inter.der]),
        never,
        deny,
        "not intended for digital signature use",
    )
    await refused(
        server, good, scripted(new_key("ec-p256", slot=22)), deny, "signature does not verify"
    )
    await refused(
        server, good, scripted(node.key, nonce=os.urandom(32)), deny, "signature does not verify"
    )
    await refused(
        server,
        encode_payload([node.der] + [inter.der] * 5),
        never,
        bad,
        "too many intermediate certificates (5; max_intermediates is 4)",
    )
    big = leaf(inter, key=new_key("rsa-3072", slot=23))
    await refused(
        server,
        encode_payload([big.der, inter.der]),
        never,
        bad,
        "RSA key is 3072 bits; max_rsa_key_size is 2048",
    )
    await refused(
        server, b'{"certificates": [', never, bad, "attestation payload is not valid JSON"
    )
    await refused(
        server,
        encode_payload([node.der[:100], inter.der]),
        never,
        bad,
        "leaf certificate cannot be parsed",
    )


async def test_replayed_response_is_refused(
    server: X509PopServer, pki: tuple[Issued, Issued], tmp_path: Path
) -> None:
    _, inter = pki
    node = leaf(inter, key=new_key("ec-p256", slot=24))
    a = agent(node, [inter], tmp_path)
    payload = await a.payload()
    recorded: list[bytes] = []

    async def recording(blob: bytes) -> bytes:
        recorded.append(await a.answer(blob))
        return recorded[-1]

    first = await server.attest(payload, recording)
    before = await agent_ids(server)

    async def replay(blob: bytes) -> bytes:
        return recorded[0]

    with pytest.raises(GRPCError) as err:
        await server.attest(payload, replay)
    assert err.value.status == Status.PERMISSION_DENIED
    assert "signature does not verify" in (err.value.message or "")
    assert await agent_ids(server) == before and str(first.spiffe_id) in before


async def test_agent_that_never_answers_is_dropped(
    server: X509PopServer, pki: tuple[Issued, Issued], tmp_path: Path
) -> None:
    _, inter = pki
    node = leaf(inter, key=new_key("ec-p256", slot=25))
    a = agent(node, [inter], tmp_path)
    before = await agent_ids(server)
    with pytest.raises(GRPCError) as err:
        # the client would wait 60 s; the server's 2 s challenge deadline must end it first
        await asyncio.wait_for(server.attest(await a.payload(), None), 30)
    assert err.value.status == Status.DEADLINE_EXCEEDED
    assert "challenge response not received within 2s" in (err.value.message or "")
    assert await agent_ids(server) == before
    # and the server still serves the next agent
    out = await server.attest(await a.payload(), a.answer)
    assert str(out.spiffe_id).endswith(fp(node))
