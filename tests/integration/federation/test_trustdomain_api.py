"""The TrustDomain API through ``plastron-server federation ...`` against real server
processes: SPIRE's flags, ``-data`` JSON and output; RefreshBundle against a live and a dead
bundle endpoint."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.federation.harness import FederatingServer
from tests.processes import free_port

ALPHA, BETA = "alpha.test", "beta.test"
# SPIRE's cmd/spire-server/cli/federation/common_test.go (testFile and pemCert): the -data
# shape, with both spellings of endpointSpiffeID, a PEM bundle and a SPIFFE bundle.
SPIRE_CERT = (
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBKjCB0aADAgECAgEBMAoGCCqGSM49BAMCMAAwIhgPMDAwMTAxMDEwMDAwMDBa\n"
    "GA85OTk5MTIzMTIzNTk1OVowADBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABHyv\n"
    "sCk5yi+yhSzNu5aquQwvm8a1Wh+qw1fiHAkhDni+wq+g3TQWxYlV51TCPH030yXs\n"
    "RxvujD4hUUaIQrXk4KKjODA2MA8GA1UdEwEB/wQFMAMBAf8wIwYDVR0RAQH/BBkw\n"
    "F4YVc3BpZmZlOi8vZG9tYWluMS50ZXN0MAoGCCqGSM49BAMCA0gAMEUCIA2dO09X\n"
    "makw2ekuHKWC4hBhCkpr5qY4bI8YUcXfxg/1AiEA67kMyH7bQnr7OVLUrL+b9ylA\n"
    "dZglS5kKnYigmwDh+/U=\n-----END CERTIFICATE-----"
)
SPIRE_X5C = "".join(SPIRE_CERT.splitlines()[1:-1])
SPIRE_DATA = {
    "federationRelationships": [
        {
            "trustDomain": "td-1.org",
            "bundleEndpointURL": "https://td-1.org/bundle",
            "bundleEndpointProfile": "https_web",
        },
        {
            "trustDomain": "td-2.org",
            "bundleEndpointURL": "https://td-2.org/bundle",
            "bundleEndpointProfile": "https_spiffe",
            "endpointSpiffeID": "spiffe://other.org/bundle",
        },
        {
            "trustDomain": "td-3.org",
            "bundleEndpointURL": "https://td-3.org/bundle",
            "bundleEndpointProfile": "https_spiffe",
            "endpointSPIFFEID": "spiffe://td-3.org/bundle",
            "trustDomainBundle": SPIRE_CERT,
            "trustDomainBundleFormat": "pem",
        },
        {
            "trustDomain": "td-4.org",
            "bundleEndpointURL": "https://td-4.org/bundle",
            "bundleEndpointProfile": "https_spiffe",
            "endpointSPIFFEID": "spiffe://td-4.org/bundle",
            "trustDomainBundleFormat": "spiffe",
            "trustDomainBundle": {
                "keys": [
                    {
                        "use": "x509-svid",
                        "kty": "EC",
                        "crv": "P-256",
                        "x": "fK-wKTnKL7KFLM27lqq5DC-bxrVaH6rDV-IcCSEOeL4",
                        "y": "wq-g3TQWxYlV51TCPH030yXsRxvujD4hUUaIQrXk4KI",
                        "x5c": [SPIRE_X5C],
                    },
                    {
                        "use": "jwt-svid",
                        "kty": "EC",
                        "kid": "KID",
                        "crv": "P-256",
                        "x": "fK-wKTnKL7KFLM27lqq5DC-bxrVaH6rDV-IcCSEOeL4",
                        "y": "wq-g3TQWxYlV51TCPH030yXsRxvujD4hUUaIQrXk4KI",
                    },
                ]
            },
        },
    ]
}


@dataclass
class Domains:
    alpha: FederatingServer
    beta: FederatingServer
    base: Path


@pytest.fixture(scope="module")
def domains() -> Iterator[Domains]:
    base = Path(tempfile.mkdtemp(prefix="pft-", dir="/tmp"))
    base.chmod(0o755)
    alpha = FederatingServer(base / ALPHA, ALPHA)
    beta = FederatingServer(base / BETA, BETA)
    alpha.start()
    beta.start()
    try:
        yield Domains(alpha, beta, base)
    finally:
        alpha.stop()
        beta.stop()
        shutil.rmtree(base, ignore_errors=True)


def _beta_pem(d: Domains) -> Path:
    path = d.base / "beta.pem"
    path.write_text(d.beta.cli("bundle", "show").stdout)
    return path


def test_create_list_show_update_delete(domains: Domains) -> None:
    alpha = domains.alpha
    created = alpha.cli(
        "federation", "create", "-trustDomain", BETA,
        "-bundleEndpointURL", domains.beta.endpoint_url,
        "-bundleEndpointProfile", "https_spiffe",
        "-endpointSpiffeID", f"spiffe://{BETA}/spire/server",
        "-trustDomainBundlePath", str(_beta_pem(domains)),
    )  # fmt: skip
    assert created.stdout == (
        f"\nTrust domain              : {BETA}\n"
        f"Bundle endpoint URL       : {domains.beta.endpoint_url}\n"
        "Bundle endpoint profile   : https_spiffe\n"
        f"Endpoint SPIFFE ID        : spiffe://{BETA}/spire/server\n"
    )
    # the relationship's bundle became beta's federated bundle
    held = alpha.cli("bundle", "list", "-id", f"spiffe://{BETA}").stdout
    assert held == domains.beta.cli("bundle", "show").stdout
    listed = alpha.cli("federation", "list").stdout
    assert listed.startswith("Found 1 federation relationship\n\nTrust domain              : beta")
    shown = alpha.cli("federation", "show", "-trustDomain", BETA).stdout
    assert shown.startswith(f"Found a federation relationship with trust domain {BETA}:\n\n")
    as_json = json.loads(
        alpha.cli("federation", "show", "-trustDomain", BETA, "-output", "json").stdout
    )
    assert as_json["trust_domain_bundle"]["trust_domain"] == BETA

    updated = alpha.cli(
        "federation", "update", "-trustDomain", BETA,
        "-bundleEndpointURL", "https://beta.example/bundle", "-bundleEndpointProfile", "https_web",
    )  # fmt: skip
    assert "Bundle endpoint profile   : https_web\n" in updated.stdout
    assert "Endpoint SPIFFE ID" not in alpha.cli("federation", "show", "-trustDomain", BETA).stdout

    assert (
        alpha.cli("federation", "delete", "-id", BETA).stdout
        == "federation relationship deleted.\n"
    )
    again = alpha.cli("federation", "delete", "-id", BETA, check=False)
    assert again.returncode == 1
    assert again.stderr.startswith(f'Error: failed to delete federation relationship "{BETA}": ')
    assert "Traceback" not in again.stderr


def test_bad_relationships_are_one_line_errors(domains: Domains) -> None:
    alpha = domains.alpha

    def web(td: str, url: str, profile: str = "https_web") -> list[str]:
        return ["-trustDomain", td, "-bundleEndpointURL", url, "-bundleEndpointProfile", profile]

    cases = [
        (web(ALPHA, "https://a"), "the server's own trust domain"),
        (web("x.test", "http://x.test"), "must use the https scheme"),
        (web("x.test", "https://x.test", "ftp"), "unknown bundle endpoint profile type: 'ftp'"),
        (web("x.test", "https://x.test", "https_spiffe"), "endpoint SPIFFE ID is required"),
    ]
    for args, message in cases:
        out = alpha.cli("federation", "create", *args, check=False)
        assert out.returncode == 1, args
        assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert alpha.cli("federation", "list").stdout == "Found 0 federation relationships\n"


def test_spire_data_file_is_accepted(domains: Domains) -> None:
    path = domains.base / "data.json"
    path.write_text(json.dumps(SPIRE_DATA))
    out = domains.alpha.cli("federation", "create", "-data", str(path)).stdout
    assert out.count("Trust domain              :") == 4
    assert "Endpoint SPIFFE ID        : spiffe://other.org/bundle" in out
    for td in ("td-3.org", "td-4.org"):
        pem = domains.alpha.cli("bundle", "list", "-id", f"spiffe://{td}").stdout
        assert pem.split() == SPIRE_CERT.split()
    listed = domains.alpha.cli("federation", "list").stdout
    assert listed.startswith("Found 4 federation relationships\n")
    for td in ("td-1.org", "td-2.org", "td-3.org", "td-4.org"):
        domains.alpha.cli("federation", "delete", "-id", td)


def test_refresh_fetches_now_and_a_dead_endpoint_keeps_the_held_bundle(domains: Domains) -> None:
    alpha, beta = domains.alpha, domains.beta
    stale = domains.base / "stale.json"
    # An old copy of beta's bundle with a lower sequence: refresh replaces it.
    current = json.loads(beta.cli("bundle", "show", "-format", "spiffe").stdout)
    current["spiffe_sequence"] = 0
    stale.write_text(json.dumps(current))
    alpha.cli(
        "federation", "create", "-trustDomain", BETA, "-bundleEndpointURL", beta.endpoint_url,
        "-bundleEndpointProfile", "https_spiffe", "-endpointSpiffeID", f"spiffe://{BETA}/spire/server",
        "-trustDomainBundlePath", str(stale), "-trustDomainBundleFormat", "spiffe",
    )  # fmt: skip
    assert alpha.cli("federation", "refresh", "-id", BETA).stdout == "Bundle refreshed\n"
    fetched = alpha.cli("bundle", "list", "-id", f"spiffe://{BETA}", "-format", "spiffe").stdout
    assert json.loads(fetched)["spiffe_refresh_hint"] == 60  # the endpoint's, not the stale copy's

    dead = f"https://127.0.0.1:{free_port()}"
    alpha.cli("federation", "update", "-trustDomain", BETA, "-bundleEndpointURL", dead,
              "-bundleEndpointProfile", "https_spiffe",
              "-endpointSpiffeID", f"spiffe://{BETA}/spire/server")  # fmt: skip
    failed = alpha.cli("federation", "refresh", "-id", BETA, check=False)
    assert failed.returncode == 1
    assert "code = Unavailable" in failed.stderr and dead in failed.stderr, failed.stderr
    kept = alpha.cli("bundle", "list", "-id", f"spiffe://{BETA}", "-format", "spiffe").stdout
    assert kept == fetched

    unknown = alpha.cli("federation", "refresh", "-id", "nobody.test", check=False)
    assert unknown.returncode == 1 and "code = NotFound" in unknown.stderr
    alpha.cli("federation", "delete", "-id", BETA)
