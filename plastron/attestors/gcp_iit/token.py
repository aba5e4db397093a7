"""A Compute Engine instance identity token, verified offline.

The token is the JWT the metadata server returns for
``instance/service-accounts/<sa>/identity?audience=<aud>&format=full``: RS256, signed by one of
the keys Google publishes (https://www.googleapis.com/oauth2/v3/certs), issuer
``https://accounts.google.com`` (Google documents the bare ``accounts.google.com`` as the other
form it uses), the requested audience, and — with ``format=full`` — the
``google.compute_engine`` claims naming the project, zone and instance.

Verify one by hand::

    import datetime as dt, pathlib
    from plastron.attestors import gcp_iit

    proved = gcp_iit.verify(
        pathlib.Path("token.jwt").read_text(),
        keys=pathlib.Path("google-certs.json").read_text(),
        audience="spire-gcp-node-attestor",
        now=dt.datetime.now(dt.UTC),
        projectid_allow_list=["my-project"],
    )
    print(proved.project_id, proved.instance_id)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from plastron.attestors.jwks import (
    JwtRefused,
    KeySet,
    check_audience,
    check_issuer,
    check_times,
    string_claim,
    verify_with,
)

NAME = "gcp_iit"
ISSUERS = frozenset({"https://accounts.google.com", "accounts.google.com"})
# SPIRE's agents ask for this audience; the server expects it.
DEFAULT_AUDIENCE = "spire-gcp-node-attestor"
# go-jose's default, which SPIRE's gcp_iit uses
DEFAULT_LEEWAY = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class IdentityToken:
    """What a verified token proves."""

    project_id: str
    project_number: int
    zone: str
    instance_id: str
    instance_name: str
    instance_creation_timestamp: int
    email: str  # the service account's; "" when the token carries none
    subject: str
    audience: str
    issuer: str
    issued_at: dt.datetime
    expires_at: dt.datetime
    key_id: str


def _integer(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise JwtRefused(f"{NAME}: token claim google.compute_engine.{name} is not an integer")
    return value


def _compute_engine(claims: Mapping[str, Any]) -> Mapping[str, Any]:
    google = claims.get("google")
    engine = google.get("compute_engine") if isinstance(google, dict) else None
    if not isinstance(engine, dict):
        raise JwtRefused(
            f"{NAME}: token carries no google.compute_engine claims; the agent must request "
            "format=full"
        )
    return engine


def verify(
    token: str,
    *,
    keys: str | KeySet,
    audience: str,
    now: dt.datetime,
    projectid_allow_list: Collection[str] | None = None,
    leeway: dt.timedelta = DEFAULT_LEEWAY,
) -> IdentityToken:
    """Verify ``token`` against ``keys`` (Google's JWKS as JSON text, or parsed) at ``now``.

    Returns what the token proves; raises AttestationFailed (:class:`JwtRefused`) naming the
    first rule it breaks: signature and header, issuer, audience, times (``leeway`` at most 5
    minutes), the ``format=full`` claims, and — when ``projectid_allow_list`` is given — the
    project.
    """
    verified = verify_with(token, keys, method=NAME)
    claims = verified.claims
    issuer = check_issuer(claims, ISSUERS, method=NAME)
    check_audience(claims, audience, method=NAME)
    issued, expires = check_times(claims, now=now, leeway=leeway, method=NAME)
    engine = _compute_engine(claims)
    where = "google.compute_engine."
    project_id = string_claim(engine, "project_id", NAME, where=where)
    if projectid_allow_list is not None and project_id not in projectid_allow_list:
        raise JwtRefused(
            f"{NAME}: identity token project ID {project_id!r} is not in the allow list"
        )
    email = claims.get("email", "")
    if not isinstance(email, str):
        raise JwtRefused(f"{NAME}: token claim email is not a string")
    return IdentityToken(
        project_id=project_id,
        project_number=_integer(engine, "project_number"),
        zone=string_claim(engine, "zone", NAME, where=where),
        instance_id=string_claim(engine, "instance_id", NAME, where=where),
        instance_name=string_claim(engine, "instance_name", NAME, where=where),
        instance_creation_timestamp=_integer(engine, "instance_creation_timestamp"),
        email=email,
        subject=string_claim(claims, "sub", NAME),
        audience=audience,
        issuer=issuer,
        issued_at=issued,
        expires_at=expires,
        key_id=verified.kid,
    )
