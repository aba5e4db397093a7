"""An Azure managed identity (MSI) access token, verified offline.

The token is what the Instance Metadata Service returns for
``/metadata/identity/oauth2/token?api-version=2018-02-01&resource=<resource>``: a JWT signed
with one of the Microsoft Entra keys (https://login.microsoftonline.com/common/discovery/keys;
a key may be given by ``n``/``e``, by an ``x5c`` certificate, or both), issuer
``https://sts.windows.net/<tenant>/``, audience the requested resource, ``tid`` the tenant and
``sub`` the managed identity's principal (object) ID.

Verify one by hand::

    import datetime as dt, pathlib
    from plastron.attestors import azure_msi

    proved = azure_msi.verify(
        pathlib.Path("token.jwt").read_text(),
        keys=pathlib.Path("entra-keys.json").read_text(),
        audience="https://management.azure.com/",
        tenant="00000000-1111-2222-3333-444444444444",
        now=dt.datetime.now(dt.UTC),
    )
    print(proved.tenant_id, proved.principal_id)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from plastron.attestors.jwks import (
    JwtRefused,
    KeySet,
    check_audience,
    check_issuer,
    check_times,
    string_claim,
    verify_with,
)

NAME = "azure_msi"
# Resource Manager: SPIRE's default resource (audience)
DEFAULT_RESOURCE = "https://management.azure.com/"
# MSI tokens carry nbf; SPIRE allows five minutes of clock difference (tokens live for hours)
DEFAULT_LEEWAY = dt.timedelta(minutes=5)


def issuer_for(tenant: str) -> str:
    return f"https://sts.windows.net/{tenant}/"


@dataclass(frozen=True)
class MsiToken:
    """What a verified token proves."""

    tenant_id: str
    principal_id: str  # the managed identity's object ID (``sub``)
    audience: str
    issuer: str
    issued_at: dt.datetime
    expires_at: dt.datetime
    key_id: str
    resource_id: str  # ``xms_mirid``: the identity's Azure resource, "" when absent


def verify(
    token: str,
    *,
    keys: str | KeySet,
    audience: str,
    tenant: str | None,
    now: dt.datetime,
    leeway: dt.timedelta = DEFAULT_LEEWAY,
) -> MsiToken:
    """Verify ``token`` against ``keys`` (the signing keys' JWKS as JSON text, or parsed) at
    ``now`` for ``audience`` (the resource the agent requested).

    ``tenant``, when given, must be the token's ``tid`` (compared without regard to case, as
    tenant IDs are GUIDs); the issuer must be that tenant's. Raises AttestationFailed
    (:class:`JwtRefused`) naming the first rule the token breaks.
    """
    verified = verify_with(token, keys, method=NAME)
    claims = verified.claims
    tid = string_claim(claims, "tid", NAME)
    if tenant is not None and tid.lower() != tenant.lower():
        raise JwtRefused(f"{NAME}: token tenant {tid[:100]!r} is not {tenant!r}")
    issuer = check_issuer(claims, {issuer_for(tid)}, method=NAME)
    check_audience(claims, audience, method=NAME)
    issued, expires = check_times(claims, now=now, leeway=leeway, method=NAME)
    mirid = claims.get("xms_mirid", "")
    return MsiToken(
        tenant_id=tid,
        principal_id=string_claim(claims, "sub", NAME),
        audience=audience,
        issuer=issuer,
        issued_at=issued,
        expires_at=expires,
        key_id=verified.kid,
        resource_id=mirid if isinstance(mirid, str) else "",
    )
