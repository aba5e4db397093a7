"""The agent's own identity: its SVID, the key in the KeyManager, the bundle, re-attestable.

One object owns it. ``AgentIdentity`` resumes a stored SVID or attests, renews at half-life
(or re-attests when the node may), takes bundle updates from the sync loop, and forgets the
SVID when the agent is banned. The server client observes it (``ServerClient.observe``): every
change here publishes a new ``TlsIdentity`` and the client rebuilds its channel from it, so
nothing else changes the agent's TLS.

Rotation follows SPIRE (pkg/common/rotationutil): rotate when the remaining lifetime is below
half the total lifetime, the half moved by a jitter of up to ±10% chosen once per SVID so a
fleet started together does not renew in lock-step.
"""

from __future__ import annotations

import datetime as _dt
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509

from plastron.agent.metrics import NODE_ATTESTATIONS
from plastron.agent.server_client import ServerClient, TlsIdentity
from plastron.agent.storage import AgentState, AgentStorage
from plastron.agent.wire import csr_der, svid_with_key
from plastron.attestors.base import AgentNodeAttestor
from plastron.clock import Clock
from plastron.errors import AttestationFailed, KeyManagerError, NotFound, PlastronError
from plastron.keymanager import KeyManager, KeyType, prove_possession
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.taint import chained_to, tainted_authorities
from plastron.spiffe.x509svid import X509Svid, spiffe_id_from_certificate, validate_x509_svid
from plastron.wire.keys import spki_der

log = logging.getLogger("plastron.agent.identity")
JITTER = 0.10
KEY_SLOTS = ("agent-svid-A", "agent-svid-B")


def other_slot(key_id: str) -> str:
    return KEY_SLOTS[1] if key_id == KEY_SLOTS[0] else KEY_SLOTS[0]


def rotation_due(svid: X509Svid, now: _dt.datetime, jitter: float) -> bool:
    """True when less than half the lifetime (scaled by 1 + jitter) remains."""
    start, end = svid.leaf.not_valid_before_utc, svid.expires_at
    remaining = end - now
    return remaining < (end - start) / 2 * (1 + jitter)


def random_jitter() -> float:
    # secrets, not random: no shared seed state with anything else in the process.
    return (secrets.randbelow(2001) - 1000) / 1000 * JITTER


def check_agent_svid(svid: X509Svid, bundle: Bundle, now: _dt.datetime) -> None:
    """The agent SVID names an agent of our trust domain and chains to our bundle."""
    td = bundle.trust_domain
    if not svid.spiffe_id.member_of(td) or not svid.spiffe_id.path.startswith("/spire/agent/"):
        raise AttestationFailed(f"server issued {svid.spiffe_id}, not an agent ID of {td}")
    validate_x509_svid(svid.chain, bundle.x509_certificates(), now)


@dataclass(frozen=True)
class IdentitySources:
    """Where a first attestation starts from; built only when needed (a resumed agent does
    not need its spent join token, nor the bootstrap bundle)."""

    node_attestor: Callable[[], AgentNodeAttestor]
    bootstrap_trust: Callable[[], Sequence[x509.Certificate]]


_NO_TLS_IDENTITY = TlsIdentity(trust=(), chain=None, key=None)


class AgentIdentity:
    def __init__(
        self,
        client: ServerClient,
        key_manager: KeyManager,
        storage: AgentStorage,
        clock: Clock,
        sources: IdentitySources,
    ) -> None:
        self._client = client
        self._keys = key_manager
        self._storage = storage
        self._clock = clock
        self._sources = sources
        self._jitter = random_jitter()
        self._state: AgentState | None = None
        self._tls = _NO_TLS_IDENTITY
        client.observe(self)

    # ---- what others read --------------------------------------------------------------------

    def tls(self) -> TlsIdentity:
        """The identity the server client connects with (observed by ``ServerClient``)."""
        return self._tls

    @property
    def state(self) -> AgentState | None:
        return self._state

    def bundle(self) -> Bundle | None:
        return None if self._state is None else self._state.bundle

    def svid(self) -> X509Svid:
        if self._state is None:
            raise NotFound("the agent has no SVID yet")
        chain = self._state.svid_chain
        return X509Svid(spiffe_id_from_certificate(chain[0]), chain)

    # ---- lifecycle ---------------------------------------------------------------------------

    async def establish(self) -> bool:
        """Resume the stored SVID when it is still usable, else attest. True when resumed."""
        state = self._resumable()
        if state is not None:
            log.info("resuming with stored agent SVID (no attestation)")
            self._adopt(state)
            return True
        await self._attest(self._sources.bootstrap_trust())
        return False

    async def reattest(self) -> None:
        """Attest again, over TLS verified by the current bundle (bootstrap when none)."""
        bundle = self.bundle()
        trust = bundle.x509_certificates() if bundle else self._sources.bootstrap_trust()
        await self._attest(trust)

    async def rotate_if_due(self) -> bool:
        """Renew (or re-attest) at half-life, or at once when the bundle flags an authority
        of our chain tainted."""
        state = self._state
        if state is None:
            return False
        svid = self.svid()
        if rotation_due(svid, self._clock.now(), self._jitter):
            why = "at half-life"
        elif chained_to(svid.chain, tainted_authorities(state.bundle)):
            why = "chained to a tainted authority"
        else:
            return False
        if state.reattestable:
            log.info("agent SVID %s: re-attesting (node is reattestable)", why)
            await self.reattest()
        else:
            log.info("agent SVID %s: renewing", why)
            await self._renew(state)
        return True

    def update_bundle(self, bundle: Bundle) -> None:
        """A new bundle from the sync loop: it verifies the server and the next renewal."""
        state = self._state
        if state is None or state.bundle == bundle:
            return
        new_state = AgentState(state.svid_chain, state.key_id, bundle, state.reattestable)
        self._storage.save(new_state)
        self._state = new_state
        self._publish_tls(new_state)

    def forget(self) -> None:
        """Delete the stored SVID (a banned agent must not resume it)."""
        self._storage.delete_svid()

    # ---- internals ---------------------------------------------------------------------------

    def _adopt(self, state: AgentState) -> None:
        self._state = state
        self._jitter = random_jitter()
        self._publish_tls(state)

    def _publish_tls(self, state: AgentState) -> None:
        self._tls = TlsIdentity(
            trust=tuple(state.bundle.x509_certificates()),
            chain=state.svid_chain,
            key=self._keys.signer(state.key_id),
        )

    async def _attest(self, trust: Sequence[x509.Certificate]) -> None:
        attestor = self._sources.node_attestor()
        outcome = "error"
        try:
            await self._attest_with(attestor, trust)
            outcome = "success"
        finally:
            NODE_ATTESTATIONS.labels(attestor.name, outcome).inc()

    async def _attest_with(
        self, attestor: AgentNodeAttestor, trust: Sequence[x509.Certificate]
    ) -> None:
        previous_tls = self._tls
        key_id = other_slot(self._state.key_id) if self._state else KEY_SLOTS[0]
        self._keys.generate_key(key_id, KeyType.EC_P256)
        key = self._keys.signer(key_id)
        try:
            # AttestAgent runs without a client certificate, like SPIRE's agent.
            self._tls = TlsIdentity(trust=tuple(trust), chain=None, key=None)
            result = await self._client.attest_agent(attestor, csr_der(key))
            svid = svid_with_key(result.chain, key)
            # Fetch the bundle with the new identity over the server-verified channel.
            self._tls = TlsIdentity(trust=tuple(trust), chain=svid.chain, key=key)
            bundle = await self._client.get_bundle()
            check_agent_svid(svid, bundle, self._clock.now())
        except BaseException:
            self._tls = previous_tls  # a failed re-attestation keeps the identity we had
            raise
        state = AgentState(svid.chain, key_id, bundle, result.reattestable)
        self._storage.save(state)
        self._adopt(state)
        log.info(
            "node attestation succeeded spiffe_id=%s method=%s reattestable=%s",
            svid.spiffe_id,
            attestor.name,
            result.reattestable,
        )

    async def _renew(self, state: AgentState) -> None:
        key_id = other_slot(state.key_id)
        self._keys.generate_key(key_id, KeyType.EC_P256)
        key = self._keys.signer(key_id)
        chain = await self._client.renew_agent(csr_der(key))
        svid = svid_with_key(chain, key)
        if svid.spiffe_id != self.svid().spiffe_id:
            raise KeyManagerError(f"renewed agent SVID is for {svid.spiffe_id}, not our ID")
        check_agent_svid(svid, state.bundle, self._clock.now())
        new_state = AgentState(svid.chain, key_id, state.bundle, state.reattestable)
        self._storage.save(new_state)
        self._adopt(new_state)
        try:
            self._keys.destroy_key(state.key_id)
        except (NotFound, KeyManagerError) as exc:
            log.warning("old agent key not destroyed key_id=%s error=%s", state.key_id, exc)
        log.info(
            "agent SVID renewed spiffe_id=%s expires_at=%s",
            svid.spiffe_id,
            svid.expires_at.isoformat(),
        )

    def _resumable(self) -> AgentState | None:
        state = self._storage.load()
        if state is None:
            return None
        if state.expires_at <= self._clock.now():
            log.info("stored agent SVID has expired; attesting again")
            return None
        try:
            public = self._keys.get_public_key(state.key_id)
        except PlastronError:
            log.warning("stored agent SVID's key %s is gone; attesting again", state.key_id)
            return None
        if spki_der(public) != spki_der(state.svid_chain[0].public_key()):
            log.warning("stored agent SVID does not match key %s; attesting again", state.key_id)
            return None
        try:
            # A TPM-wrapped key copied from another machine has the right public key but does
            # not load here: such a data_dir must not resume that node's identity.
            prove_possession(self._keys.signer(state.key_id), public)
        except PlastronError as exc:
            log.warning(
                "stored agent SVID's key %s cannot sign here (%s); attesting again",
                state.key_id,
                exc,
            )
            return None
        return state
