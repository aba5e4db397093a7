"""ServerCA: what the API layer calls to sign X509-SVIDs, JWT-SVIDs and downstream CAs.

It always signs with the *current* authority of the AuthorityManager (whose successor is
already in the bundle before it becomes current). Signing through a blocking KeyManager
(``blocking = True``, e.g. PKCS#11) runs in the KeyRunner's bounded executor; a batch of
workload SVIDs may be signed in worker processes (server/ca/batch_signing.py).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncGenerator, Sequence

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from plastron.clock import Clock
from plastron.errors import FailedPrecondition, InvalidArgument, PlastronError
from plastron.keymanager import KeyManager, PublicKey
from plastron.server.ca.authorities import AuthorityManager
from plastron.server.ca.batch_signing import BatchSigner, SignedX509Svid, WorkloadCsr, X509Batch
from plastron.server.ca.config import CAConfig
from plastron.server.ca.key_runner import KeyRunner
from plastron.server.ca.leaves import LeafPlan, check_workload_path, sign_leaf
from plastron.server.ca.rotator import Rotator
from plastron.server.ca.slots import X509CA, JwtKey
from plastron.server.ca.store import CAStore
from plastron.server.metrics import SVIDS_SIGNED
from plastron.spiffe.ids import SpiffeId, server_id
from plastron.spiffe.jwtsvid import mint_jwt_svid
from plastron.spiffe.x509svid import make_ca_certificate
from plastron.upstream import UpstreamAuthority
from plastron.wire.limits import check_dns_names, check_jwt_audience, check_ttl

log = logging.getLogger(__name__)

BACKDATE = dt.timedelta(seconds=10)


HEALTH_CHECK_PATH = "/for/health/check/only"


class ServerCA:
    def __init__(
        self,
        *,
        config: CAConfig,
        manager: AuthorityManager,
        keys: KeyRunner,
        clock: Clock,
        rotator: Rotator | None = None,
        batches: BatchSigner | None = None,
    ) -> None:
        self.config = config
        self.manager = manager
        self.rotator = rotator or Rotator(manager, clock)
        #: Where batches are signed: its worker pool starts with the first large batch.
        self.batches = batches or BatchSigner(keys, config.worker_processes)
        self._keys = keys
        self._clock = clock
        self._td = config.trust_domain

    @classmethod
    async def open(
        cls,
        *,
        config: CAConfig,
        key_manager: KeyManager,
        store: CAStore,
        clock: Clock,
        upstream: UpstreamAuthority | None = None,
    ) -> ServerCA:
        """Load the journal, then run one rotation tick so a current authority exists."""
        for warning in config.ttl_warnings():
            log.warning("ca config: %s", warning)
        keys = KeyRunner(key_manager, config.signing_workers, plugin=config.key_manager_plugin)
        manager = AuthorityManager(
            config=config, keys=keys, store=store, clock=clock, upstream=upstream
        )
        await manager.load()
        ca = cls(config=config, manager=manager, keys=keys, clock=clock)
        await ca.rotator.rotate()
        return ca

    def close(self) -> None:
        self.batches.close()
        self._keys.close()

    # -- current authorities -------------------------------------------------------------

    def _current_x509(self) -> X509CA:
        ca = self.manager.current_x509
        if ca is None:
            raise FailedPrecondition(f"no active X.509 CA for {self._td}")
        if self._clock.now() >= ca.not_after:
            raise FailedPrecondition(
                f"the active X.509 CA for {self._td} expired at {ca.not_after.isoformat()} "
                f"(authority_id={ca.authority_id}); is the rotator running?"
            )
        return ca

    def _current_jwt(self) -> JwtKey:
        key = self.manager.current_jwt
        if key is None:
            raise FailedPrecondition(f"no active JWT signing key for {self._td}")
        if self._clock.now() >= key.not_after:
            raise FailedPrecondition(
                f"the active JWT key for {self._td} expired at {key.not_after.isoformat()} "
                f"(kid={key.kid}); is the rotator running?"
            )
        return key

    def x509_authority(self) -> tuple[x509.Certificate, list[x509.Certificate]]:
        """The signing CA certificate and its upstream intermediates (root excluded)."""
        ca = self._current_x509()
        return ca.certificate, list(ca.chain)

    def jwt_key_id(self) -> str:
        return self._current_jwt().kid

    # -- X509-SVIDs ----------------------------------------------------------------------

    async def sign_workload_x509_svid(
        self,
        *,
        spiffe_id: SpiffeId,
        public_key: PublicKey,
        ttl: int = 0,
        dns_names: Sequence[str] = (),
        subject: x509.Name | None = None,
    ) -> list[x509.Certificate]:
        """Leaf first, then the CA and its intermediates up to (excluding) the bundle root."""
        ca = self._current_x509()  # one read: a rotation mid-call cannot mix two CAs
        now = self._clock.now()
        plan = self._plan_workload(ca, now, spiffe_id, ttl, dns_names, subject=subject)
        return await self._sign_x509(ca, now, plan, public_key, "x509_workload")

    def sign_workload_x509_svids(
        self, requests: Sequence[WorkloadCsr]
    ) -> AsyncGenerator[SignedX509Svid | PlastronError, None]:
        """A batch of workload SVIDs from one CA at one clock reading: per request, in order,
        its SVID or the reason it was refused (checked like :meth:`sign_workload_x509_svid`,
        then its CSR). Where the CSRs are checked and the leaves signed (here, in a signing
        thread or in worker processes) is the CA's choice, per batch. Close the iterator if
        you stop early (``contextlib.aclosing``)."""
        ca = self._current_x509()
        now = self._clock.now()
        leaves: list[LeafPlan | PlastronError] = []
        for request in requests:
            try:
                leaves.append(
                    self._plan_workload(ca, now, request.spiffe_id, request.ttl, request.dns_names)
                )
            except PlastronError as exc:
                leaves.append(exc)
        batch = X509Batch(ca, now - BACKDATE, leaves)
        return self.batches.sign(batch, [(r.csr, r.field) for r in requests])

    def _plan_workload(
        self,
        ca: X509CA,
        now: dt.datetime,
        spiffe_id: SpiffeId,
        ttl: int,
        dns_names: Sequence[str],
        *,
        subject: x509.Name | None = None,
    ) -> LeafPlan:
        """The checks every workload leaf passes, and what the CA decides for it."""
        self._check_workload_id(spiffe_id, "X509-SVID")
        check_dns_names(dns_names)
        lifetime = _ttl(ttl, self.config.default_x509_svid_ttl)
        not_after = self._cap(now + lifetime, ca.not_after, spiffe_id, "X509-SVID")
        return LeafPlan(spiffe_id, not_after, tuple(dns_names), subject)

    async def sign_agent_x509_svid(
        self, *, spiffe_id: SpiffeId, public_key: PublicKey, ttl: int = 0
    ) -> list[x509.Certificate]:
        self._check_member(spiffe_id)
        if not spiffe_id.path.startswith("/spire/agent/"):
            raise InvalidArgument(f"agent ID {spiffe_id} is not under /spire/agent/")
        lifetime = _ttl(ttl, self.config.effective_agent_ttl)
        return await self._sign_fixed(spiffe_id, public_key, lifetime, (), "x509_agent")

    async def sign_server_x509_svid(
        self, *, public_key: PublicKey, dns_names: Sequence[str] = ()
    ) -> list[x509.Certificate]:
        check_dns_names(dns_names)
        lifetime = self.config.default_x509_svid_ttl
        return await self._sign_fixed(
            server_id(self._td), public_key, lifetime, dns_names, "x509_server"
        )

    async def _sign_fixed(
        self,
        spiffe_id: SpiffeId,
        public_key: PublicKey,
        lifetime: dt.timedelta,
        dns_names: Sequence[str],
        kind: str,
    ) -> list[x509.Certificate]:
        """A leaf whose identity and lifetime the CA chose itself (agent, server, health)."""
        ca = self._current_x509()  # one read: a rotation mid-call cannot mix two CAs
        now = self._clock.now()
        not_after = self._cap(now + lifetime, ca.not_after, spiffe_id, "X509-SVID")
        plan = LeafPlan(spiffe_id, not_after, tuple(dns_names))
        return await self._sign_x509(ca, now, plan, public_key, kind)

    async def _sign_x509(
        self, ca: X509CA, now: dt.datetime, plan: LeafPlan, public_key: PublicKey, kind: str
    ) -> list[x509.Certificate]:
        """``kind``: what the leaf is, for the metrics (x509_workload, x509_agent…)."""
        signer = await self._keys.run(self._keys.key_manager.signer, ca.key_id)
        leaf = await self._keys.sign(
            kind,
            sign_leaf,
            plan,
            public_key,
            issuer=ca.certificate,
            issuer_key=signer,
            not_before=now - BACKDATE,
        )
        SVIDS_SIGNED.labels(kind).inc()
        return [leaf, *ca.chain_after_leaf]

    # -- JWT-SVIDs -----------------------------------------------------------------------

    async def sign_jwt_svid(
        self, *, spiffe_id: SpiffeId, audience: Sequence[str], ttl: int = 0
    ) -> str:
        self._check_workload_id(spiffe_id, "JWT-SVID")
        audience = check_jwt_audience(audience)
        key = self._current_jwt()
        now = self._clock.now().replace(microsecond=0)
        lifetime = _ttl(ttl, self.config.default_jwt_svid_ttl)
        expires = self._cap(now + lifetime, key.not_after, spiffe_id, "JWT-SVID")
        signer = await self._keys.run(self._keys.key_manager.signer, key.key_id)
        token = await self._keys.sign(
            "jwt",
            mint_jwt_svid,
            spiffe_id=spiffe_id,
            audience=tuple(audience),
            issued_at=now,
            expires_at=expires,
            key=signer,
            key_id=key.kid,
            issuer=self.config.jwt_issuer,
        )
        SVIDS_SIGNED.labels("jwt").inc()
        return token

    # -- downstream CA -------------------------------------------------------------------

    async def sign_downstream_x509_ca(
        self, *, csr_public_key: PublicKey, ttl: int = 0
    ) -> list[x509.Certificate]:
        """An intermediate CA for a nested server, chained like an SVID (root excluded)."""
        ca = self._current_x509()
        now = self._clock.now()
        lifetime = _ttl(ttl, self.config.ca_ttl)
        not_after = self._cap(now + lifetime, ca.not_after, self._td.id, "downstream CA")
        signer = await self._keys.run(self._keys.key_manager.signer, ca.key_id)
        cert = await self._keys.sign(
            "x509_downstream_ca",
            make_ca_certificate,
            trust_domain=self._td,
            public_key=csr_public_key,
            issuer=ca.certificate,
            issuer_key=signer,
            not_before=now - BACKDATE,
            not_after=not_after,
        )
        SVIDS_SIGNED.labels("x509_downstream_ca").inc()
        return [cert, *ca.chain_after_leaf]

    # -- health --------------------------------------------------------------------------

    async def health_check(self) -> None:
        """Test-sign an X509-SVID like SPIRE; raises whatever the KeyManager raises."""
        key = ec.generate_private_key(ec.SECP256R1()).public_key()
        await self._sign_fixed(
            self._td.spiffe_id(HEALTH_CHECK_PATH),
            key,
            dt.timedelta(minutes=1),
            (),
            "x509_health_check",
        )

    # -- checks --------------------------------------------------------------------------

    def _check_member(self, spiffe_id: SpiffeId) -> None:
        if not spiffe_id.member_of(self._td):
            raise InvalidArgument(f"{spiffe_id} is not a member of trust domain {self._td}")

    def _check_workload_id(self, spiffe_id: SpiffeId, what: str) -> None:
        self._check_member(spiffe_id)
        check_workload_path(spiffe_id, what)

    def _cap(
        self, wanted: dt.datetime, limit: dt.datetime, spiffe_id: SpiffeId, what: str
    ) -> dt.datetime:
        if wanted <= limit:
            return wanted
        # SPIRE's guaranteed TTL is min(ca_ttl/6, 7d); beyond what the signer has left, cap.
        log.warning(
            "%s TTL capped by signing authority expiry spiffe_id=%s requested_not_after=%s "
            "capped_not_after=%s",
            what,
            spiffe_id,
            wanted.isoformat(),
            limit.isoformat(),
        )
        return limit


def _ttl(seconds: int, default: dt.timedelta) -> dt.timedelta:
    return dt.timedelta(seconds=check_ttl(seconds)) or default
