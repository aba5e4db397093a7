"""tpm_devid runs the NodeAttestor conformance suite (tests/conformance/nodeattestor.py).

A private swtpm holds an ECC P-256 DevID key (made once per test) certified by a test DevID CA;
good attempts come from the real agent half. Bad credentials are DevID certificates for that
key that are expired, not yet valid or from another CA (the agent half sends them as it would
its own), EK certificates re-issued the same ways, and swapped TPM public areas.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from attest_harness import PayloadEdit, reissued_ek_cert, swap
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from swtpm_fixtures import ManufacturerCa, SwtpmProcess, make_manufacturer_ca

from plastron.tpm.device import TpmDevice
from plastron.tpm.devid import TpmDevidAgentAttestor
from plastron.tpm.structures import parse_tpm2b_public
from tests.conformance.nodeattestor import NodeAttestorAdapter, NodeAttestorConformance
from tests.conformance.nodeattestor_env import Attempt, AttestEnv

pytestmark = pytest.mark.swtpm
DAY = dt.timedelta(days=1)


def issue_devid(
    ca: ManufacturerCa, key: object, not_before: dt.datetime, not_after: dt.datetime
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node-7")]))
        .issuer_name(ca.cert.subject)
        .public_key(key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(ca.key, hashes.SHA256())
    )


class TpmDevidAdapter(NodeAttestorAdapter):
    kind = "tpm_devid"
    message_prefixes = ("tpm_devid: ",)
    not_applicable = {
        "hostile_agent_path": "the agent ID path is the SHA-1 hex of the DevID certificate, "
        "computed by the server; no attested text reaches it",
    }

    def __init__(self, tpm: SwtpmProcess, ek_ca: ManufacturerCa, directory: Path) -> None:
        self.tcti, self.ek_ca, self.dir = tpm.tcti, ek_ca, directory
        self.devid_ca = make_manufacturer_ca(directory / "devid-ca", "Conformance DevID CA")
        blob = TpmDevice(tpm.tcti).create_devid("ecc-p256")
        self.devid_key = parse_tpm2b_public(blob.public).public_key()
        self.priv, self.pub = directory / "devid.priv", directory / "devid.pub"
        self.priv.write_bytes(blob.private)
        self.pub.write_bytes(blob.public)
        self._n = 0

    def server_plugins(self, case: str) -> str:
        return f"""NodeAttestor "tpm_devid" {{ plugin_data {{
            devid_ca_path = "{self.devid_ca.dir / "ca-cert.pem"}"
            endorsement_ca_path = "{self.ek_ca.dir / "ca-cert.pem"}"
        }} }}"""

    def _agent(self, cert: x509.Certificate) -> TpmDevidAgentAttestor:
        self._n += 1
        path = self.dir / f"devid-{self._n}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return TpmDevidAgentAttestor(str(path), str(self.priv), str(self.pub), tcti=self.tcti)

    async def _attempt(
        self, label: str, *, ca: ManufacturerCa | None = None, edit: PayloadEdit | None = None,
        not_before: dt.timedelta = -DAY, not_after: dt.timedelta = 30 * DAY,
    ) -> Attempt:  # fmt: skip
        now = dt.datetime.now(dt.UTC)
        cert = issue_devid(ca or self.devid_ca, self.devid_key, now + not_before, now + not_after)
        agent = self._agent(cert)
        payload = await agent.payload()
        if edit is not None:
            obj = json.loads(payload)
            edit(obj)
            payload = json.dumps(obj).encode()
        return Attempt(payload, agent.answer, label)

    async def good(self, env: AttestEnv) -> Attempt:
        return await self._attempt("DevID certificate from the trusted DevID CA")

    async def wrong_key_type(self, env: AttestEnv) -> list[Attempt]:
        return [
            await self._attempt(
                "the EK (a decryption key) sent as the AK", edit=swap("AKPub", "EKPub")
            ),
            await self._attempt("the EK sent as the DevID key", edit=swap("DevIDPub", "EKPub")),
        ]

    async def expired(self, env: AttestEnv) -> list[Attempt]:
        now = dt.datetime.now(dt.UTC)
        ek_edit = reissued_ek_cert(
            "EKCert", self.ek_ca, not_before=now - 30 * DAY, not_after=now - DAY
        )
        return [
            await self._attempt(
                "DevID certificate expired yesterday", not_before=-30 * DAY, not_after=-DAY
            ),
            await self._attempt("EK certificate expired yesterday", edit=ek_edit),
        ]

    async def not_yet_valid(self, env: AttestEnv) -> list[Attempt]:
        now = dt.datetime.now(dt.UTC)
        ek_edit = reissued_ek_cert(
            "EKCert", self.ek_ca, not_before=now + DAY, not_after=now + 30 * DAY
        )
        return [
            await self._attempt(
                "DevID certificate valid from tomorrow", not_before=DAY, not_after=30 * DAY
            ),
            await self._attempt("EK certificate valid from tomorrow", edit=ek_edit),
        ]

    async def untrusted_ca(self, env: AttestEnv) -> list[Attempt]:
        other = make_manufacturer_ca(self.dir / "other-ca", cn="Other Vendor")
        return [
            await self._attempt("DevID certificate from another CA", ca=other),
            await self._attempt(
                "EK certificate from another CA", edit=reissued_ek_cert("EKCert", other)
            ),
        ]


class TestTpmDevidConformance(NodeAttestorConformance):
    @pytest.fixture
    def adapter(
        self, swtpm: SwtpmProcess, manufacturer_ca: ManufacturerCa, tmp_path: Path
    ) -> NodeAttestorAdapter:
        return TpmDevidAdapter(swtpm, manufacturer_ca, tmp_path)
