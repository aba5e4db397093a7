"""AgentIdentity owns the agent's TLS identity; the server client follows what it publishes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import pytest
from agent_authority import TestAuthority
from cryptography import x509

from plastron.agent.identity import KEY_SLOTS, AgentIdentity, IdentitySources
from plastron.agent.server_client import ServerClient
from plastron.agent.storage import AgentState, AgentStorage
from plastron.attestors.base import AgentNodeAttestor
from plastron.clock import ManualClock
from plastron.keymanager import KeyType, MemoryKeyManager
from plastron.spiffe.bundle import Bundle, X509Authority
from plastron.spiffe.x509svid import make_x509_svid

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


class AttestationAttempted(Exception):
    pass


def _refuse_attestor() -> AgentNodeAttestor:
    raise AttestationAttempted("the identity tried to attest")


def _no_bootstrap() -> Sequence[x509.Certificate]:
    return []


def _stored_state(
    authority: TestAuthority, keys: MemoryKeyManager, ttl: dt.timedelta
) -> AgentState:
    public = keys.generate_key(KEY_SLOTS[0], KeyType.EC_P256)
    cert = make_x509_svid(
        spiffe_id=authority.td.spiffe_id("/spire/agent/test/node-1"),
        public_key=public,
        issuer=authority.ca,
        issuer_key=authority.ca_key,
        not_before=NOW - dt.timedelta(minutes=1),
        not_after=NOW + ttl,
    )
    return AgentState((cert,), KEY_SLOTS[0], authority.bundle, reattestable=False)


def _identity(
    tmp_path: Path, clock: ManualClock, keys: MemoryKeyManager
) -> tuple[AgentIdentity, ServerClient, AgentStorage]:
    storage = AgentStorage(tmp_path)
    client = ServerClient("127.0.0.1", 1, TestAuthority("example.org", NOW).td)
    sources = IdentitySources(node_attestor=_refuse_attestor, bootstrap_trust=_no_bootstrap)
    return AgentIdentity(client, keys, storage, clock, sources), client, storage


async def test_resume_publishes_the_stored_svid_to_the_client(tmp_path: Path) -> None:
    authority, keys, clock = TestAuthority("example.org", NOW), MemoryKeyManager(), ManualClock(NOW)
    state = _stored_state(authority, keys, dt.timedelta(hours=1))
    identity, client, storage = _identity(tmp_path, clock, keys)
    storage.save(state)

    assert await identity.establish() is True
    tls = identity.tls()
    assert tls.chain == state.svid_chain
    assert tls.trust == (authority.ca,)
    assert tls.key is keys.signer(KEY_SLOTS[0])
    first = client.channel()
    assert client.channel() is first  # nothing changed: the same channel
    client.close()


async def test_a_new_bundle_rebuilds_the_channel_and_is_stored(tmp_path: Path) -> None:
    authority, keys, clock = TestAuthority("example.org", NOW), MemoryKeyManager(), ManualClock(NOW)
    identity, client, storage = _identity(tmp_path, clock, keys)
    storage.save(_stored_state(authority, keys, dt.timedelta(hours=1)))
    await identity.establish()
    before = client.channel()

    identity.update_bundle(authority.bundle)  # the same bundle: nothing to do
    assert client.channel() is before

    extra = TestAuthority("example.org", NOW).ca
    grown = Bundle(authority.td, (*authority.bundle.x509_authorities, X509Authority(extra)), ())
    identity.update_bundle(grown)
    after = client.channel()
    assert after is not before
    assert identity.tls().trust == (authority.ca, extra)
    stored = storage.load()
    assert stored is not None and stored.bundle == grown
    client.close()


async def test_an_expired_stored_svid_is_not_resumed(tmp_path: Path) -> None:
    authority, keys, clock = TestAuthority("example.org", NOW), MemoryKeyManager(), ManualClock(NOW)
    identity, _client, storage = _identity(tmp_path, clock, keys)
    storage.save(_stored_state(authority, keys, dt.timedelta(minutes=5)))
    clock.advance(dt.timedelta(minutes=10))

    with pytest.raises(AttestationAttempted):
        await identity.establish()
    assert identity.state is None
    assert identity.tls().chain is None  # nothing half-adopted


async def test_a_stored_svid_whose_key_is_gone_is_not_resumed(tmp_path: Path) -> None:
    authority, keys, clock = TestAuthority("example.org", NOW), MemoryKeyManager(), ManualClock(NOW)
    identity, _client, storage = _identity(tmp_path, clock, keys)
    storage.save(_stored_state(authority, keys, dt.timedelta(hours=1)))
    keys.destroy_key(KEY_SLOTS[0])

    with pytest.raises(AttestationAttempted):
        await identity.establish()


async def test_forget_deletes_the_stored_svid(tmp_path: Path) -> None:
    authority, keys, clock = TestAuthority("example.org", NOW), MemoryKeyManager(), ManualClock(NOW)
    identity, _client, storage = _identity(tmp_path, clock, keys)
    storage.save(_stored_state(authority, keys, dt.timedelta(hours=1)))
    await identity.establish()

    identity.forget()
    assert storage.load() is None
