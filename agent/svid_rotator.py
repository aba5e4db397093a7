"""Agent SVID rotation: renew at half-life (±10% jitter), or re-attest when the node may.

SPIRE's rule (pkg/common/rotationutil): rotate when the remaining lifetime is below half the
total lifetime, the half moved by a jitter of up to ±10% chosen once per SVID so a fleet
started together does not renew in lock-step.
"""

from __future__ import annotations

import datetime as _dt
import logging
import secrets
from collections.abc import Awaitable, Callable

from plastron.agent.attestation import check_agent_svid
from plastron.agent.server_client import ServerClient
from plastron.agent.storage import AgentState, AgentStorage
from plastron.agent.wire import csr_der, svid_with_key
from plastron.clock import Clock
from plastron.errors import KeyManagerError, NotFound
from plastron.keymanager import KeyManager, KeyType
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.x509svid import X509Svid, spiffe_id_from_certificate

log = logging.getLogger("plastron.agent.svid_rotator")
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


class AgentSvidRotator:
    def __init__(
        self,
        client: ServerClient,
        key_manager: KeyManager,
        storage: AgentStorage,
        clock: Clock,
        reattest: Callable[[], Awaitable[AgentState]],
    ) -> None:
        self._client = client
        self._keys = key_manager
        self._storage = storage
        self._clock = clock
        self._reattest = reattest
        self._jitter = random_jitter()
        self.state: AgentState | None = None

    def adopt(self, state: AgentState) -> None:
        """Use ``state`` (after attestation or resume) for TLS and for the next rotation."""
        self.state = state
        self._jitter = random_jitter()
        self._client.set_trust(state.bundle.x509_certificates())
        self._client.set_identity(state.svid_chain, self._keys.signer(state.key_id))

    def update_bundle(self, bundle: Bundle) -> None:
        """Keep the stored state's bundle current: it checks renewals and re-attestation TLS."""
        state = self.state
        if state is None or state.bundle == bundle:
            return
        self.state = AgentState(state.svid_chain, state.key_id, bundle, state.reattestable)
        self._storage.save(self.state)

    def svid(self) -> X509Svid:
        assert self.state is not None
        chain = self.state.svid_chain
        return X509Svid(spiffe_id_from_certificate(chain[0]), chain)

    async def rotate_if_due(self) -> bool:
        state = self.state
        if state is None or not rotation_due(self.svid(), self._clock.now(), self._jitter):
            return False
        if state.reattestable:
            log.info("agent SVID at half-life: re-attesting (node is reattestable)")
            self.adopt(await self._reattest())
            return True
        await self._renew(state)
        return True

    async def _renew(self, state: AgentState) -> None:
        key_id = other_slot(state.key_id)
        self._keys.generate_key(key_id, KeyType.EC_P256)
        key = self._keys.signer(key_id)
        chain = await self._client.renew_agent(csr_der(key))
        svid = svid_with_key(chain, key)
        if svid.spiffe_id != self.svid().spiffe_id:
            raise KeyManagerError(f"renewed agent SVID is for {svid.spiffe_id}, not our ID")
        check_agent_svid(svid, state.bundle, self._clock)
        new_state = AgentState(svid.chain, key_id, state.bundle, state.reattestable)
        self._storage.save(new_state)
        self.adopt(new_state)
        try:
            self._keys.destroy_key(state.key_id)
        except (NotFound, KeyManagerError) as exc:
            log.warning("old agent key not destroyed key_id=%s error=%s", state.key_id, exc)
        log.info(
            "agent SVID renewed spiffe_id=%s expires_at=%s",
            svid.spiffe_id,
            svid.expires_at.isoformat(),
        )
