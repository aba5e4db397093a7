"""A throwaway trust-domain authority for agent tests: real CA cert, real JWT key."""

from __future__ import annotations

import datetime as dt

from cryptography.hazmat.primitives.asymmetric import ec

from plastron.agent.cache import WorkloadEntry
from plastron.selector import Selector
from plastron.spiffe.bundle import Bundle, JwtAuthority, X509Authority
from plastron.spiffe.ids import SpiffeId, TrustDomain
from plastron.spiffe.jwtsvid import JwtSvid, mint_jwt_svid, parse_jwt_svid_insecure
from plastron.spiffe.x509svid import X509Svid, make_ca_certificate, make_x509_svid


class TestAuthority:
    __test__ = False

    def __init__(self, td: str, now: dt.datetime, ca_ttl: dt.timedelta = dt.timedelta(days=1)):
        self.td = TrustDomain.parse(td)
        self.now = now
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = make_ca_certificate(
            trust_domain=self.td,
            public_key=self.ca_key.public_key(),
            issuer=None,
            issuer_key=self.ca_key,
            not_before=now - dt.timedelta(minutes=1),
            not_after=now + ca_ttl,
        )
        self.jwt_key = ec.generate_private_key(ec.SECP256R1())
        self.jwt_kid = "kid-" + td.replace(".", "-")
        self.bundle = Bundle(
            self.td,
            (X509Authority(self.ca),),
            (JwtAuthority(self.jwt_kid, self.jwt_key.public_key()),),
        )

    def svid(
        self, path: str, ttl: dt.timedelta = dt.timedelta(hours=1), start: dt.datetime | None = None
    ) -> X509Svid:
        key = ec.generate_private_key(ec.SECP256R1())
        sid = self.td.spiffe_id(path)
        start = start or self.now
        cert = make_x509_svid(
            spiffe_id=sid,
            public_key=key.public_key(),
            issuer=self.ca,
            issuer_key=self.ca_key,
            not_before=start,
            not_after=start + ttl,
        )
        return X509Svid(sid, (cert,), key)

    def jwt(
        self,
        sid: SpiffeId,
        audience: tuple[str, ...],
        ttl: dt.timedelta = dt.timedelta(minutes=5),
        now: dt.datetime | None = None,
    ) -> JwtSvid:
        now = now or self.now
        token = mint_jwt_svid(
            spiffe_id=sid,
            audience=audience,
            issued_at=now,
            expires_at=now + ttl,
            key=self.jwt_key,
            key_id=self.jwt_kid,
        )
        return parse_jwt_svid_insecure(token)


def entry(
    entry_id: str,
    td: TrustDomain,
    path: str,
    *selectors: str,
    federates_with: tuple[TrustDomain, ...] = (),
    hint: str = "",
) -> WorkloadEntry:
    return WorkloadEntry(
        entry_id=entry_id,
        spiffe_id=td.spiffe_id(path),
        selectors=frozenset(Selector.parse(s) for s in selectors),
        federates_with=frozenset(federates_with),
        hint=hint,
    )
