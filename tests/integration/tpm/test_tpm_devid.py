"""``tpm_devid`` at plugin level: SPIRE message shapes, real swtpm, plus checks SPIRE lacks."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest
from attest_harness import TD, edit_json, flip_b64
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from swtpm_fixtures import ManufacturerCa, SwtpmProcess, make_manufacturer_ca

from plastron.attestors.base import AttestationResult
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import AttestationFailed
from plastron.plugins import PluginContext
from plastron.tpm.device import AK_ATTRIBUTES, TpmDevice
from plastron.tpm.devid import TpmDevidAgentAttestor, TpmDevidServerAttestor, TpmDevidServerConfig
from plastron.tpm.structures import RESTRICTED, parse_tpm2b_public

pytestmark = pytest.mark.swtpm


def issue_devid(ca: ManufacturerCa, key: object, cn: str = "node-7") -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.cert.subject)
        .public_key(key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(ca.key, hashes.SHA256())
    )


def provision(
    tmp: Path, tcti: str, ca: ManufacturerCa, key_owner: TpmDevice | None = None
) -> dict[str, str]:
    blob = TpmDevice(tcti).create_devid("ecc-p256")
    public = parse_tpm2b_public(blob.public).public_key()
    if key_owner is not None:  # certificate for some other key
        public = ec.generate_private_key(ec.SECP256R1()).public_key()
    cert = issue_devid(ca, public)
    paths = {"cert": tmp / "devid.pem", "priv": tmp / "devid.priv", "pub": tmp / "devid.pub"}
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["priv"].write_bytes(blob.private)
    paths["pub"].write_bytes(blob.public)
    return {k: str(v) for k, v in paths.items()}


def server(tmp: Path, devid_ca: ManufacturerCa, ek_ca: ManufacturerCa) -> TpmDevidServerAttestor:
    data = {
        "devid_ca_path": str(devid_ca.dir / "ca-cert.pem"),
        "endorsement_ca_path": str(ek_ca.dir / "ca-cert.pem"),
    }
    settings = PluginConfig("NodeAttestor", "tpm_devid", data).settings()
    cfg = TpmDevidServerConfig.from_settings(settings, PluginContext())
    return TpmDevidServerAttestor(cfg, TD)


async def run(
    srv: TpmDevidServerAttestor, agent: TpmDevidAgentAttestor, payload=None, answer=None
) -> AttestationResult:  # type: ignore[no-untyped-def]
    data = await agent.payload()
    if payload:
        data = payload(data)

    async def respond(msg: bytes) -> bytes:
        out = await agent.answer(msg)
        return answer(out) if answer else out

    return await srv.attest(data, respond)


@pytest.fixture
def devid_ca(tmp_path: Path) -> ManufacturerCa:
    return make_manufacturer_ca(tmp_path / "devid-ca", "Plastron DevID CA")


async def test_devid_attestation_succeeds(
    swtpm: SwtpmProcess, manufacturer_ca: ManufacturerCa, devid_ca: ManufacturerCa, tmp_path: Path
) -> None:
    p = provision(tmp_path, swtpm.tcti, devid_ca)
    agent = TpmDevidAgentAttestor(p["cert"], p["priv"], p["pub"], tcti=swtpm.tcti)
    result = await run(server(tmp_path, devid_ca, manufacturer_ca), agent)
    leaf = x509.load_pem_x509_certificate(Path(p["cert"]).read_bytes())
    sha1 = leaf.fingerprint(hashes.SHA1()).hex()
    assert str(result.agent_id) == f"spiffe://{TD}/spire/agent/tpm_devid/{sha1}"
    ca_sha1 = devid_ca.cert.fingerprint(hashes.SHA1()).hex()
    assert {str(s) for s in result.selectors} == {
        "tpm_devid:subject:cn:node-7",
        "tpm_devid:issuer:cn:Plastron DevID CA",
        f"tpm_devid:ca:fingerprint:{ca_sha1}",
    }
    assert result.can_reattest


async def test_devid_cert_for_another_key_is_rejected(
    swtpm: SwtpmProcess, manufacturer_ca: ManufacturerCa, devid_ca: ManufacturerCa, tmp_path: Path
) -> None:
    p = provision(tmp_path, swtpm.tcti, devid_ca, key_owner=TpmDevice(swtpm.tcti))
    agent = TpmDevidAgentAttestor(p["cert"], p["priv"], p["pub"], tcti=swtpm.tcti)
    with pytest.raises(
        AttestationFailed, match="DevID certificate key is not the certified DevID key"
    ):
        await run(server(tmp_path, devid_ca, manufacturer_ca), agent)


async def test_non_restricted_ak_is_rejected(
    swtpm: SwtpmProcess, manufacturer_ca: ManufacturerCa, devid_ca: ManufacturerCa, tmp_path: Path
) -> None:
    """SPIRE accepts any signing AK; a non-restricted one could sign a forged TPMS_ATTEST."""
    p = provision(tmp_path, swtpm.tcti, devid_ca)
    agent = TpmDevidAgentAttestor(p["cert"], p["priv"], p["pub"], tcti=swtpm.tcti)
    dev = agent.device
    weak = dev.create_ak("rsa-2048", "rsa-2048", attributes=AK_ATTRIBUTES & ~RESTRICTED)
    devid = agent._devid
    info, sig = dev.certify("rsa-2048", weak, devid)

    def swap(data: bytes) -> bytes:
        obj = json.loads(data)
        obj["AKPub"] = base64.b64encode(weak.public[2:]).decode()
        obj["CertifiedDevID"] = base64.b64encode(info).decode()
        obj["CertificationSignature"] = base64.b64encode(sig).decode()
        return json.dumps(obj).encode()

    with pytest.raises(AttestationFailed, match="AK lacks required attributes restricted"):
        await run(server(tmp_path, devid_ca, manufacturer_ca), agent, payload=swap)


async def test_untrusted_devid_ca_and_bad_answers_are_rejected(
    swtpm: SwtpmProcess, manufacturer_ca: ManufacturerCa, devid_ca: ManufacturerCa, tmp_path: Path
) -> None:
    p = provision(tmp_path, swtpm.tcti, devid_ca)
    agent = TpmDevidAgentAttestor(p["cert"], p["priv"], p["pub"], tcti=swtpm.tcti)
    other = make_manufacturer_ca(tmp_path / "other", "Other DevID CA")
    with pytest.raises(AttestationFailed, match="DevID cert does not chain to a trusted CA"):
        await run(server(tmp_path, other, manufacturer_ca), agent)
    srv = server(tmp_path, devid_ca, manufacturer_ca)
    with pytest.raises(AttestationFailed, match="DevID challenge signature is not valid"):
        await run(srv, agent, answer=edit_json("DevID", lambda v: flip_b64(v, 10)))
    with pytest.raises(AttestationFailed, match="activated credential does not match"):
        await run(srv, agent, answer=edit_json("CredActivation", flip_b64))
