"""The library functions operators run by hand: plastron.attestors.gcp_iit.verify and
plastron.attestors.azure_msi.verify, with an explicit clock and keys given as JWKS text."""

from __future__ import annotations

import datetime as dt

import pytest

from plastron.attestors import azure_msi, gcp_iit
from plastron.errors import AttestationFailed
from tests.cloud.azure import TENANT, msi_claims
from tests.cloud.gcp import gcp_claims
from tests.cloud.tokens import Issuer

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
GOOGLE = Issuer.make(41)
ENTRA = Issuer.make(42, x5c_only=True)
PRINCIPAL = "6e8a4b9c-1d2e-4f30-8a7b-9c0d1e2f3a4b"


def gcp(token: str, now: dt.datetime = NOW, **kw: object) -> gcp_iit.IdentityToken:
    return gcp_iit.verify(
        token,
        keys=GOOGLE.jwks(),
        audience="aud-x",
        now=now,
        **kw,  # type: ignore[arg-type]
    )


def test_gcp_verify_returns_the_proved_claims() -> None:
    proved = gcp(GOOGLE.sign(gcp_claims("42", audience="aud-x", now=NOW)))
    assert (proved.project_id, proved.zone, proved.instance_id) == ("proj-a", "us-west1-b", "42")
    assert proved.project_number == 739419398126 and proved.key_id == "test-kid-41"
    assert proved.email == "node-sa@proj-a.iam.gserviceaccount.com"
    assert proved.expires_at == NOW + dt.timedelta(hours=1)


def test_gcp_verify_bare_issuer_and_leeway() -> None:
    bare = GOOGLE.sign(gcp_claims("1", audience="aud-x", now=NOW, iss="accounts.google.com"))
    assert gcp(bare).issuer == "accounts.google.com"
    token = GOOGLE.sign(gcp_claims("1", audience="aud-x", now=NOW))
    gcp(token, NOW + dt.timedelta(hours=1, seconds=59))  # within the default minute
    with pytest.raises(AttestationFailed, match="expired"):
        gcp(token, NOW + dt.timedelta(hours=1, seconds=61))
    gcp(token, NOW + dt.timedelta(hours=1, seconds=200), leeway=dt.timedelta(minutes=5))


def test_gcp_verify_allow_list_and_claim_types() -> None:
    token = GOOGLE.sign(gcp_claims("1", audience="aud-x", now=NOW))
    assert gcp(token, projectid_allow_list=["proj-a"]).project_id == "proj-a"
    with pytest.raises(AttestationFailed, match="not in the allow list"):
        gcp(token, projectid_allow_list=["proj-b"])
    bad = gcp_claims("1", audience="aud-x", now=NOW)
    bad["google"]["compute_engine"]["project_number"] = "739419398126"
    with pytest.raises(AttestationFailed, match="project_number is not an integer"):
        gcp(GOOGLE.sign(bad))


def msi(token: str, tenant: str | None = TENANT, now: dt.datetime = NOW) -> azure_msi.MsiToken:
    return azure_msi.verify(
        token, keys=ENTRA.jwks(), audience="https://management.azure.com/", tenant=tenant, now=now
    )


def test_azure_verify_returns_the_proved_claims_with_x5c_keys() -> None:
    proved = msi(ENTRA.sign(msi_claims(PRINCIPAL, now=NOW)))
    assert (proved.tenant_id, proved.principal_id) == (TENANT, PRINCIPAL)
    assert proved.issuer == f"https://sts.windows.net/{TENANT}/"
    assert proved.resource_id.endswith("/virtualMachines/blog")
    assert (
        msi(ENTRA.sign(msi_claims(PRINCIPAL, now=NOW)), tenant=TENANT.upper()).tenant_id == TENANT
    )
    assert msi(ENTRA.sign(msi_claims(PRINCIPAL, now=NOW)), tenant=None).tenant_id == TENANT


def test_azure_verify_tenant_issuer_and_nbf() -> None:
    other = "0d3b9c6e-0000-4000-8000-000000000001"
    with pytest.raises(AttestationFailed, match=f"tenant '{TENANT}' is not '{other}'"):
        msi(ENTRA.sign(msi_claims(PRINCIPAL, now=NOW)), tenant=other)
    spoofed = msi_claims(PRINCIPAL, now=NOW, iss=f"https://sts.windows.net/{other}/")
    with pytest.raises(AttestationFailed, match="issuer"):
        msi(ENTRA.sign(spoofed), tenant=None)
    v2 = msi_claims(PRINCIPAL, now=NOW, iss=f"https://login.microsoftonline.com/{TENANT}/v2.0")
    with pytest.raises(AttestationFailed, match="issuer"):
        msi(ENTRA.sign(v2))
    later = ENTRA.sign(msi_claims(PRINCIPAL, now=NOW + dt.timedelta(minutes=4)))
    msi(later)  # nbf four minutes ahead: within SPIRE's five minutes of leeway
    with pytest.raises(AttestationFailed, match="issued in the future"):
        msi(ENTRA.sign(msi_claims(PRINCIPAL, now=NOW + dt.timedelta(minutes=6))))
