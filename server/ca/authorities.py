"""AuthorityManager: the A/B slots of the X.509 CA and the JWT signer, and their journal.

It performs the lifecycle steps (load, prepare, activate, destroy expired keys, prune the
bundle); *when* to perform them is the Rotator's business. Every step that changes a slot is
written to the journal in the datastore; every new authority enters the trust bundle when it
is prepared, before it can sign anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plastron.clock import Clock
from plastron.errors import FailedPrecondition, KeyManagerError, Unavailable
from plastron.keymanager import PrivateKey, PublicKey
from plastron.server.ca import bundle_updates
from plastron.server.ca.config import CAConfig
from plastron.server.ca.journal import AuthorityStatus, Journal
from plastron.server.ca.key_runner import KeyRunner
from plastron.server.ca.slots import (
    JWT_KEY_IDS,
    X509_KEY_IDS,
    X509CA,
    JwtKey,
    authority_id_of,
    other_slot,
)
from plastron.server.ca.store import CAStore, StoredJournal
from plastron.server.metrics import CA_EVENTS
from plastron.spiffe.bundle import Bundle, JwtAuthority
from plastron.spiffe.ids import TrustDomain
from plastron.spiffe.jwtsvid import new_key_id
from plastron.spiffe.leaf_der import signature_hash
from plastron.spiffe.x509svid import make_ca_certificate
from plastron.upstream import UpstreamAuthority, UpstreamUnsupported
from plastron.wire.keys import spki_der

log = logging.getLogger(__name__)

BACKDATE = dt.timedelta(seconds=10)
PRUNE_GRACE = dt.timedelta(hours=24)  # keep expired authorities this long (SPIRE)


def _whole_seconds(when: dt.datetime) -> dt.datetime:
    return when.replace(microsecond=0)


class AuthorityManager:
    def __init__(
        self,
        *,
        config: CAConfig,
        keys: KeyRunner,
        store: CAStore,
        clock: Clock,
        upstream: UpstreamAuthority | None = None,
    ) -> None:
        self._config = config
        self._keys = keys
        self._store = store
        self._clock = clock
        self._upstream = upstream
        self._td = config.trust_domain
        self._x509: dict[str, X509CA | None] = {"A": None, "B": None}
        self._jwt: dict[str, JwtKey | None] = {"A": None, "B": None}
        self._x509_current = "A"
        self._jwt_current = "A"
        self._journal = Journal()
        self._journal_row = 0
        # Held keys of authorities that expired while we were down: key id -> SPKI DER.
        self._stale_keys: dict[str, bytes] = {}
        self.lock = asyncio.Lock()  # held by whoever changes slots (rotator, admin API)

    # -- views -------------------------------------------------------------------------

    @property
    def current_x509(self) -> X509CA | None:
        ca = self._x509[self._x509_current]
        return ca if ca is not None and ca.status is AuthorityStatus.ACTIVE else None

    @property
    def next_x509(self) -> X509CA | None:
        return self._x509[other_slot(self._x509_current)]

    @property
    def current_jwt(self) -> JwtKey | None:
        key = self._jwt[self._jwt_current]
        return key if key is not None and key.status is AuthorityStatus.ACTIVE else None

    @property
    def next_jwt(self) -> JwtKey | None:
        return self._jwt[other_slot(self._jwt_current)]

    @property
    def has_upstream(self) -> bool:
        return self._upstream is not None

    @property
    def journal(self) -> Journal:
        return self._journal

    @property
    def trust_domain(self) -> TrustDomain:
        return self._td

    def own_jwt_key_ids(self) -> set[str]:
        return {key.kid for key in self._jwt.values() if key is not None}

    async def stored_bundle(self) -> Bundle:
        return bundle_updates.load(await self._store.fetch_bundle(self._td), self._td)

    async def edit_bundle(self, edit: Callable[[bytes | None], bytes]) -> Bundle:
        """Apply ``edit`` to the stored bundle atomically; return the result."""
        return bundle_updates.load(await self._store.update_bundle(self._td, edit), self._td)

    # -- load ----------------------------------------------------------------------------

    async def load(self) -> None:
        """Resume from the journal matching the keys the KeyManager still holds."""
        infos = await self._keys.run(self._keys.key_manager.get_public_keys)
        held = {info.key_id: info.public_key for info in infos}
        journal, row = await self._find_journal(held)
        self._journal, self._journal_row = journal, row
        now = self._clock.now()
        for slot, key_id in X509_KEY_IDS.items():
            self._x509[slot] = self._load_x509_slot(slot, held.get(key_id), now)
        for slot, key_id in JWT_KEY_IDS.items():
            self._jwt[slot] = self._load_jwt_slot(slot, held.get(key_id), now)
        self._x509_current = _current_slot(self._x509)
        self._jwt_current = _current_slot(self._jwt)
        await self._restore_bundle()
        log.info(
            "ca journal loaded row=%d x509_active=%s jwt_active=%s",
            row,
            self.current_x509.authority_id if self.current_x509 else "-",
            self.current_jwt.kid if self.current_jwt else "-",
        )

    async def _find_journal(self, held: dict[str, PublicKey]) -> tuple[Journal, int]:
        for key_id in X509_KEY_IDS.values():
            key = held.get(key_id)
            if key is None:
                continue
            stored = await self._store.fetch_ca_journal(authority_id_of(key))
            if stored is not None:
                return Journal.from_json(stored.data), stored.id
        return Journal(), 0

    def _load_x509_slot(self, slot: str, key: PublicKey | None, now: dt.datetime) -> X509CA | None:
        if key is None:
            return None
        aid = authority_id_of(key)
        for record in reversed(self._journal.x509_cas):
            if record.slot_id == slot and record.authority_id == aid:
                ca = X509CA.from_record(record)
                if ca.authority_id != aid:
                    return None  # mismatched: the rotator starts that slot afresh
                if ca.not_after <= now:
                    self._stale_keys[ca.key_id] = spki_der(key)
                    return None
                return ca
        return None

    def _load_jwt_slot(self, slot: str, key: PublicKey | None, now: dt.datetime) -> JwtKey | None:
        if key is None:
            return None
        der = spki_der(key)
        for record in reversed(self._journal.jwt_keys):
            if record.slot_id == slot and record.public_key_der == der:
                if record.not_after <= now:
                    self._stale_keys[JWT_KEY_IDS[slot]] = der
                    return None
                return JwtKey.from_record(record)
        return None

    async def _restore_bundle(self) -> None:
        """Re-add live authorities the bundle lost (e.g. a bundle deleted by an operator)."""
        data = await self._store.fetch_bundle(self._td)
        # Upstream mode: the roots are the authorities and were added when the CA was minted.
        missing_x509 = [
            ca.certificate
            for ca in self._x509.values()
            if ca is not None
            and ca.status is not AuthorityStatus.OLD
            and not ca.upstream_authority_id
            and not bundle_updates.has_x509(data, self._td, ca.certificate)
        ]
        missing_jwt = [
            _jwt_authority(k)
            for k in self._jwt.values()
            if k is not None and not bundle_updates.has_jwt(data, self._td, k.kid)
        ]
        if missing_x509 or missing_jwt:
            await self._store.update_bundle(
                self._td,
                lambda d: bundle_updates.add(d, self._td, x509_certs=missing_x509, jwt=missing_jwt),
            )

    # -- X.509 CA --------------------------------------------------------------------------

    async def prepare_x509(self) -> X509CA:
        """Generate the next slot's key, sign its CA cert, publish it in the bundle."""
        slot = other_slot(self._x509_current)
        key_id = X509_KEY_IDS[slot]
        public_key = await self._keys.run(
            self._keys.key_manager.generate_key, key_id, self._config.ca_key_type
        )
        now = self._clock.now()
        if self._upstream is None:
            signer = await self._keys.run(self._keys.key_manager.signer, key_id)
            cert = await self._keys.run(
                make_ca_certificate,
                trust_domain=self._td,
                public_key=public_key,
                issuer=None,
                issuer_key=signer,
                not_before=now - BACKDATE,
                not_after=now + self._config.ca_ttl,
                subject=self._config.ca_subject,
            )
            chain: tuple[x509.Certificate, ...] = ()
            bundle_certs = [cert]
            upstream_id = ""
        else:
            cert, chain, bundle_certs = await self._mint_upstream(key_id, public_key)
            upstream_id = _issuer_key_id(cert)
        await self._store.update_bundle(
            self._td, lambda d: bundle_updates.add(d, self._td, x509_certs=bundle_certs)
        )
        ca = X509CA(
            slot_id=slot,
            certificate=cert,
            chain=chain,
            issued_at=_whole_seconds(now),
            status=AuthorityStatus.PREPARED,
            upstream_authority_id=upstream_id,
        )
        self._x509[slot] = ca
        await self._save_journal(self._journal.with_x509_ca(ca.to_record()))
        log.info(
            "x509 ca prepared slot=%s authority_id=%s not_after=%s upstream=%s",
            slot,
            ca.authority_id,
            ca.not_after.isoformat(),
            upstream_id or "-",
        )
        CA_EVENTS.labels("x509", "prepared").inc()
        return ca

    async def _mint_upstream(
        self, key_id: str, public_key: PublicKey
    ) -> tuple[x509.Certificate, tuple[x509.Certificate, ...], list[x509.Certificate]]:
        assert self._upstream is not None
        signer = await self._keys.run(self._keys.key_manager.signer, key_id)
        csr = await self._keys.run(_build_csr, self._config, signer)
        chain, roots = await self._upstream.mint_x509_ca(csr, self._config.ca_ttl)
        if not chain or not roots:
            raise FailedPrecondition("upstream authority returned an empty chain or no roots")
        if spki_der(_cert_key(chain[0])) != spki_der(public_key):
            raise FailedPrecondition(
                "upstream authority returned a CA certificate for a different key "
                f"(subject={chain[0].subject.rfc4514_string()!r})"
            )
        return chain[0], tuple(chain[1:]), list(roots)

    async def activate_x509(self) -> X509CA:
        """Make the prepared authority current; the previous one becomes OLD."""
        nxt = self.next_x509
        if nxt is None or nxt.status is not AuthorityStatus.PREPARED:
            raise FailedPrecondition("no prepared X.509 CA to activate")
        journal = self._journal
        old = self._x509[self._x509_current]
        if old is not None:
            old = old.with_status(AuthorityStatus.OLD)
            self._x509[self._x509_current] = old
            journal = journal.with_x509_ca(old.to_record())
        active = nxt.with_status(AuthorityStatus.ACTIVE)
        self._x509[nxt.slot_id] = active
        self._x509_current = nxt.slot_id
        await self._save_journal(journal.with_x509_ca(active.to_record()))
        log.info("x509 ca activated slot=%s authority_id=%s", active.slot_id, active.authority_id)
        CA_EVENTS.labels("x509", "activated").inc()
        return active

    # -- JWT signer ------------------------------------------------------------------------

    async def prepare_jwt(self) -> JwtKey:
        slot = other_slot(self._jwt_current)
        public_key = await self._keys.run(
            self._keys.key_manager.generate_key,
            JWT_KEY_IDS[slot],
            self._config.effective_jwt_key_type,
        )
        now = self._clock.now()
        key = JwtKey(
            slot_id=slot,
            kid=new_key_id(),
            public_key=public_key,
            issued_at=_whole_seconds(now),
            not_after=_whole_seconds(now + self._config.ca_ttl),
            status=AuthorityStatus.PREPARED,
        )
        authorities = [_jwt_authority(key)]
        if self._upstream is not None:
            # An upstream without a JWT side leaves our own key as the authority.
            with contextlib.suppress(UpstreamUnsupported):
                authorities += await self._upstream.publish_jwt_key(authorities[0])
        await self._store.update_bundle(
            self._td, lambda d: bundle_updates.add(d, self._td, jwt=authorities)
        )
        self._jwt[slot] = key
        await self._save_journal(self._journal.with_jwt_key(key.to_record()))
        log.info("jwt key prepared slot=%s kid=%s", slot, key.kid)
        CA_EVENTS.labels("jwt", "prepared").inc()
        return key

    async def activate_jwt(self) -> JwtKey:
        nxt = self.next_jwt
        if nxt is None or nxt.status is not AuthorityStatus.PREPARED:
            raise FailedPrecondition("no prepared JWT key to activate")
        journal = self._journal
        old = self._jwt[self._jwt_current]
        if old is not None:
            old = old.with_status(AuthorityStatus.OLD)
            self._jwt[self._jwt_current] = old
            journal = journal.with_jwt_key(old.to_record())
        active = nxt.with_status(AuthorityStatus.ACTIVE)
        self._jwt[nxt.slot_id] = active
        self._jwt_current = nxt.slot_id
        await self._save_journal(journal.with_jwt_key(active.to_record()))
        log.info("jwt key activated slot=%s kid=%s", active.slot_id, active.kid)
        CA_EVENTS.labels("jwt", "activated").inc()
        return active

    # -- taint and revoke (operator actions; which authority may be named is the API's check) --

    async def taint_x509(self, authority_id: str) -> None:
        """Flag an X.509 authority of the bundle tainted: agents re-issue what chains to it."""
        await self._store.update_bundle(
            self._td, lambda d: bundle_updates.taint_x509(d, self._td, authority_id)
        )
        log.warning("x509 authority tainted authority_id=%s", authority_id)
        CA_EVENTS.labels("x509", "tainted").inc()

    async def revoke_x509(self, authority_id: str, retired: X509CA | None) -> None:
        """Remove a tainted X.509 authority from the bundle, then forget ``retired`` (the CA
        it is, or the CA it signed) and destroy its key: nothing it signed verifies again."""
        await self._store.update_bundle(
            self._td, lambda d: bundle_updates.revoke_x509(d, self._td, authority_id)
        )
        log.warning("x509 authority revoked authority_id=%s", authority_id)
        CA_EVENTS.labels("x509", "revoked").inc()
        if retired is not None and self._x509[retired.slot_id] == retired:
            self._x509[retired.slot_id] = None
            await self._save_journal(self._journal.without_authority(retired.authority_id))
            await self._destroy_revoked(retired.key_id, authority_id)

    async def taint_jwt(self, kid: str) -> None:
        await self._store.update_bundle(
            self._td, lambda d: bundle_updates.taint_jwt(d, self._td, kid)
        )
        log.warning("jwt authority tainted kid=%s", kid)
        CA_EVENTS.labels("jwt", "tainted").inc()

    async def revoke_jwt(self, kid: str, retired: JwtKey | None) -> None:
        await self._store.update_bundle(
            self._td, lambda d: bundle_updates.revoke_jwt(d, self._td, kid)
        )
        log.warning("jwt authority revoked kid=%s", kid)
        CA_EVENTS.labels("jwt", "revoked").inc()
        if retired is not None and self._jwt[retired.slot_id] == retired:
            self._jwt[retired.slot_id] = None
            await self._save_journal(self._journal.without_authority(retired.kid))
            await self._destroy_revoked(retired.key_id, kid)

    async def _destroy_revoked(self, key_id: str, authority_id: str) -> None:
        try:
            await self._keys.run(self._keys.key_manager.destroy_key, key_id)
        except (KeyManagerError, Unavailable) as exc:
            raise type(exc)(
                f"authority {authority_id} left the bundle but its key {key_id} could not be "
                f"destroyed: {exc}"
            ) from exc
        log.warning(
            "revoked authority key destroyed key_id=%s authority_id=%s", key_id, authority_id
        )

    # -- clean-up --------------------------------------------------------------------------

    async def destroy_expired_keys(self) -> list[str]:
        """Destroy OLD slot keys once everything they signed has expired (their notAfter)."""
        now = self._clock.now()
        destroyed: list[str] = []
        stale, self._stale_keys = self._stale_keys, {}
        for key_id, der in stale.items():
            # Only if the slot was not re-used since load (a new key must survive).
            held_now = await self._keys.run(self._keys.key_manager.get_public_keys)
            unchanged = any(i.key_id == key_id and spki_der(i.public_key) == der for i in held_now)
            if unchanged and await self._destroy(key_id):
                destroyed.append(key_id)
        for slots in (self._x509, self._jwt):
            for slot, held in list(slots.items()):
                if held is None or held.status is not AuthorityStatus.OLD:
                    continue
                if now < held.not_after:
                    continue
                if await self._destroy(held.key_id):
                    slots[slot] = None
                    destroyed.append(held.key_id)
        return destroyed

    async def _destroy(self, key_id: str) -> bool:
        try:
            await self._keys.run(self._keys.key_manager.destroy_key, key_id)
        except KeyManagerError as exc:
            log.warning("ca key destroy failed key_id=%s error=%s", key_id, exc)
            return False
        log.info("ca key destroyed key_id=%s", key_id)
        kind = "x509" if key_id in X509_KEY_IDS.values() else "jwt"
        CA_EVENTS.labels(kind, "key_destroyed").inc()
        return True

    async def prune_bundle(self) -> None:
        """Drop bundle authorities that expired more than 24h ago (never the last one)."""
        cutoff = self._clock.now() - PRUNE_GRACE
        await self._store.update_bundle(
            self._td, lambda d: bundle_updates.prune(d, self._td, cutoff)
        )

    async def _save_journal(self, journal: Journal) -> None:
        self._journal = journal
        active = journal.active_x509_authority_id()
        if not active and self._journal_row == 0:
            return  # nothing can find a journal without an active CA; saved at activation
        stored = await self._store.set_ca_journal(
            StoredJournal(self._journal_row, journal.to_json(), active)
        )
        self._journal_row = stored.id


def _current_slot(slots: dict[str, X509CA | None] | dict[str, JwtKey | None]) -> str:
    """The ACTIVE slot; without one, the slot opposite a PREPARED one (so it activates next)."""
    for slot, held in slots.items():
        if held is not None and held.status is AuthorityStatus.ACTIVE:
            return slot
    for slot, held in slots.items():
        if held is not None and held.status is AuthorityStatus.PREPARED:
            return other_slot(slot)
    return "A"


def _jwt_authority(key: JwtKey) -> JwtAuthority:
    return JwtAuthority(key_id=key.kid, public_key=key.public_key, expires_at=key.not_after)


def _cert_key(cert: x509.Certificate) -> PublicKey:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise FailedPrecondition("upstream CA certificate key is neither EC nor RSA")
    return key


def _issuer_key_id(cert: x509.Certificate) -> str:
    try:
        akid = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return "upstream"
    return akid.key_identifier.hex() if akid.key_identifier else "upstream"


def _build_csr(config: CAConfig, signer: PrivateKey) -> x509.CertificateSigningRequest:
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(config.effective_ca_subject)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(str(config.trust_domain.id))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    return builder.sign(signer, signature_hash(signer))
