"""The ``tpm`` method end to end at plugin level: real swtpm, in-process challenge callback."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest
from attest_harness import TD, attest, edit_json, flip_b64, server_for
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from swtpm_fixtures import ManufacturerCa, SwtpmProcess, make_manufacturer_ca
from tpm2_pytss import ESAPI, TCTILdr
from tpm2_pytss.constants import ESYS_TR, TPM2_CAP, TPM2_HC
from tpm2_pytss.types import TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE, TPMT_PUBLIC

from plastron.errors import AttestationFailed, ConfigError, Unavailable
from plastron.tpm.attestor import TpmAgentAttestor, TpmServerAttestor, TpmServerConfig
from plastron.tpm.device import AK_ATTRIBUTES
from plastron.tpm.messages import Payload
from plastron.tpm.structures import RESTRICTED, parse_tpm2b_public
from plastron.tpm.verify import check_ak, spki_sha256

pytestmark = pytest.mark.swtpm
ZERO = "00" * 32


@pytest.mark.parametrize("ek_type", ["rsa-2048", "ecc-p384"])
async def test_attestation_succeeds(
    ek_type: str, swtpm: SwtpmProcess, manufacturer_ca: ManufacturerCa, tmp_path: Path
) -> None:
    server = server_for(manufacturer_ca.cert_pem, tmp_path, pcrs=[0, 7])
    agent = TpmAgentAttestor(swtpm.tcti, ek_type)
    result = await attest(server, agent)
    ek = agent.device.read_ek(ek_type)
    assert ek.cert_der is not None
    ek_hash = spki_sha256(x509.load_der_x509_certificate(ek.cert_der).public_key())  # type: ignore[arg-type]
    assert str(result.agent_id) == f"spiffe://{TD}/spire/agent/tpm/{ek_hash}"
    values = {str(s) for s in result.selectors}
    ca_hash = manufacturer_ca.cert.fingerprint(hashes.SHA256()).hex()
    assert values == {
        f"tpm:ek_pubhash:{ek_hash}",
        f"tpm:ek_ca:{ca_hash}",
        "tpm:manufacturer:id:00001014",
        "tpm:model:swtpm",
        "tpm:firmware:id:20191023",
        f"tpm:pcr:sha256:0:{ZERO}",
        f"tpm:pcr:sha256:7:{ZERO}",
    }
    assert result.can_reattest
    check_ak(parse_tpm2b_public(result.node_data))
    # every attestation creates a fresh AK
    assert Payload.parse(await agent.payload()).ak_pub != result.node_data


async def test_node_data_is_the_activated_ak(
    swtpm: SwtpmProcess, manufacturer_ca: ManufacturerCa, tmp_path: Path
) -> None:
    server = server_for(manufacturer_ca.cert_pem, tmp_path)
    agent = TpmAgentAttestor(swtpm.tcti, "ecc-p384")
    sent: list[bytes] = []

    def keep(data: bytes) -> bytes:
        sent.append(Payload.parse(data).ak_pub)
        return data

    result = await attest(server, agent, payload=keep)
    assert result.node_data == sent[0]


async def test_untrusted_manufacturer_ca_is_rejected(swtpm: SwtpmProcess, tmp_path: Path) -> None:
    other = make_manufacturer_ca(tmp_path / "other-ca", "Some Other Vendor")
    server = server_for(other.cert_pem, tmp_path)
    with pytest.raises(
        AttestationFailed,
        match=r"EK certificate \(manufacturer CA\) does not chain to a trusted CA",
    ):
        await attest(server, TpmAgentAttestor(swtpm.tcti, "rsa-2048"))


async def test_ek_public_differing_from_cert_is_rejected(
    swtpm: SwtpmProcess, manufacturer_ca: ManufacturerCa, tmp_path: Path
) -> None:
    server = server_for(manufacturer_ca.cert_pem, tmp_path)
    agent = TpmAgentAttestor(swtpm.tcti, "rsa-2048")
    other_ek = base64.b64encode(agent.device.read_ek("ecc-p384").public).decode()
    with pytest.raises(AttestationFailed, match="EK public key does not match the EK certificate"):
        await attest(server, agent, payload=edit_json("ek_pub", lambda _: other_ek))


async def test_ek_hash_allow_list(
    swtpm: SwtpmProcess, manufacturer_ca: ManufacturerCa, tmp_path: Path
) -> None:
    agent = TpmAgentAttestor(swtpm.tcti, "ecc-p384")
    ek = agent.device.read_ek("ecc-p384")
    ek_hash = spki_sha256(parse_tpm2b_public(ek.public).public_key())
    listed = tmp_path / "ek-hashes"
    listed.write_text(f"# allowed EKs\n{ek_hash}\n")
    server = TpmServerAttestor(TpmServerConfig(ek_hash_path=str(listed)), TD)

    def drop_cert(data: bytes) -> bytes:
        obj = json.loads(data)
        del obj["ek_cert"]
        return json.dumps(obj).encode()

    result = await attest(server, agent, payload=drop_cert)
    assert {str(s) for s in result.selectors} == {f"tpm:ek_pubhash:{ek_hash}"}

    listed.write_text("ab" * 32 + "\n")
    server = TpmServerAttestor(TpmServerConfig(ek_hash_path=str(listed)), TD)
    with pytest.raises(AttestationFailed, match="not in the EK hash allow-list"):
        await attest(server, agent, payload=drop_cert)


async def test_credential_for_another_ak_fails_activation(
    swtpm: SwtpmProcess, manufacturer_ca: ManufacturerCa, tmp_path: Path
) -> None:
    server = server_for(manufacturer_ca.cert_pem, tmp_path)
    agent = TpmAgentAttestor(swtpm.tcti, "rsa-2048")
    other_ak = base64.b64encode(agent.device.create_ak("rsa-2048").public).decode()
    with pytest.raises(AttestationFailed, match="ActivateCredential failed in the TPM"):
        await attest(server, agent, payload=edit_json("ak_pub", lambda _: other_ak))


async def test_non_restricted_ak_is_rejected(
    swtpm: SwtpmProcess, manufacturer_ca: ManufacturerCa, tmp_path: Path
) -> None:
    server = server_for(manufacturer_ca.cert_pem, tmp_path)
    agent = TpmAgentAttestor(swtpm.tcti, "ecc-p384")
    weak = agent.device.create_ak("ecc-p384", attributes=AK_ATTRIBUTES & ~RESTRICTED)
    weak_b64 = base64.b64encode(weak.public).decode()
    with pytest.raises(AttestationFailed, match="AK lacks required attributes restricted"):
        await attest(server, agent, payload=edit_json("ak_pub", lambda _: weak_b64))


async def test_tampered_credential_blob_fails_activation(
    swtpm: SwtpmProcess, manufacturer_ca: ManufacturerCa, tmp_path: Path
) -> None:
    server = server_for(manufacturer_ca.cert_pem, tmp_path)
    agent = TpmAgentAttestor(swtpm.tcti, "rsa-2048")
    with pytest.raises(AttestationFailed, match=r"ActivateCredential failed.*integrity"):
        await attest(server, agent, challenge=edit_json("id_object", flip_b64))


async def test_wrong_secret_is_rejected(
    swtpm: SwtpmProcess, manufacturer_ca: ManufacturerCa, tmp_path: Path
) -> None:
    server = server_for(manufacturer_ca.cert_pem, tmp_path)
    agent = TpmAgentAttestor(swtpm.tcti, "ecc-p384")
    with pytest.raises(AttestationFailed, match="activated credential does not match"):
        await attest(server, agent, answer=edit_json("secret", flip_b64))


async def test_replayed_answer_is_rejected(
    swtpm: SwtpmProcess, manufacturer_ca: ManufacturerCa, tmp_path: Path
) -> None:
    server = server_for(manufacturer_ca.cert_pem, tmp_path)
    agent = TpmAgentAttestor(swtpm.tcti, "ecc-p384")
    recorded: list[bytes] = []

    def record(data: bytes) -> bytes:
        recorded.append(data)
        return data

    await attest(server, agent, answer=record)
    with pytest.raises(AttestationFailed, match="activated credential does not match"):
        await attest(server, agent, answer=lambda _: recorded[0])


async def test_quote_with_stale_nonce_is_rejected(
    swtpm: SwtpmProcess, manufacturer_ca: ManufacturerCa, tmp_path: Path
) -> None:
    server = server_for(manufacturer_ca.cert_pem, tmp_path)
    agent = TpmAgentAttestor(swtpm.tcti, "ecc-p384")
    stale = base64.b64encode(b"\x07" * 32).decode()
    with pytest.raises(AttestationFailed, match="quote nonce does not match"):
        await attest(server, agent, challenge=edit_json("nonce", lambda _: stale))


async def test_pcr_values_not_matching_quote_are_rejected(
    swtpm: SwtpmProcess, manufacturer_ca: ManufacturerCa, tmp_path: Path
) -> None:
    server = server_for(manufacturer_ca.cert_pem, tmp_path, pcrs=[7])
    agent = TpmAgentAttestor(swtpm.tcti, "ecc-p384")
    fake = base64.b64encode(b"\x11" * 32).decode()

    def lie(pcrs: dict[str, str]) -> dict[str, str]:
        return {**pcrs, "7": fake}

    with pytest.raises(AttestationFailed, match="do not match the quoted PCR digest"):
        await attest(server, agent, answer=edit_json("pcrs", lie))


async def test_quote_over_fewer_pcrs_is_rejected(
    swtpm: SwtpmProcess, manufacturer_ca: ManufacturerCa, tmp_path: Path
) -> None:
    server = server_for(manufacturer_ca.cert_pem, tmp_path, pcrs=[0, 7])
    agent = TpmAgentAttestor(swtpm.tcti, "ecc-p384")
    with pytest.raises(AttestationFailed, match=r"does not cover exactly sha256 PCRs \[0, 7\]"):
        await attest(server, agent, challenge=edit_json("pcrs", lambda _: [0]))


def _extend_pcr7(tcti: str) -> None:
    name, _, conf = tcti.partition(":")
    with ESAPI(TCTILdr(name, conf)) as ectx:
        ectx.pcr_event(ESYS_TR.PCR7, b"bootloader changed")


async def test_pcr_policy(
    swtpm: SwtpmProcess, manufacturer_ca: ManufacturerCa, tmp_path: Path
) -> None:
    policy = tmp_path / "pcr-policy.json"
    policy.write_text(json.dumps({"7": [ZERO]}))
    server = server_for(manufacturer_ca.cert_pem, tmp_path, pcr_policy_path=str(policy))
    agent = TpmAgentAttestor(swtpm.tcti, "ecc-p384")
    await attest(server, agent)  # measured boot as expected
    _extend_pcr7(swtpm.tcti)
    with pytest.raises(AttestationFailed, match=r"PCR 7 value [0-9a-f]{64} is not allowed"):
        await attest(server, agent)


async def test_agent_that_stops_answering_times_out(
    swtpm: SwtpmProcess, manufacturer_ca: ManufacturerCa, tmp_path: Path
) -> None:
    server = server_for(manufacturer_ca.cert_pem, tmp_path, answer_timeout=0.3)
    agent = TpmAgentAttestor(swtpm.tcti, "ecc-p384")

    async def silent(_: bytes) -> bytes:
        await asyncio.Event().wait()
        return b""

    with pytest.raises(AttestationFailed, match=r"did not answer the challenge within 0\.3s"):
        await server.attest(await agent.payload(), silent)


async def test_swtpm_killed_mid_attestation_then_retry_works(
    swtpm: SwtpmProcess, manufacturer_ca: ManufacturerCa, tmp_path: Path
) -> None:
    server = server_for(manufacturer_ca.cert_pem, tmp_path)
    agent = TpmAgentAttestor(swtpm.tcti, "ecc-p384")
    payload = await agent.payload()

    async def die_then_answer(msg: bytes) -> bytes:
        swtpm.kill()
        return await agent.answer(msg)

    with pytest.raises(Unavailable, match="is not reachable during ActivateCredential"):
        await server.attest(payload, die_then_answer)
    swtpm.start()
    result = await attest(server, agent)
    assert result.agent_id.path.startswith("/spire/agent/tpm/")


async def test_leftover_handles_are_flushed(
    swtpm: SwtpmProcess, manufacturer_ca: ManufacturerCa, tmp_path: Path
) -> None:
    """A crashed run that filled swtpm's 3 object slots does not block the next attestation."""
    name, _, conf = swtpm.tcti.partition(":")
    with ESAPI(TCTILdr(name, conf)) as ectx:
        tmpl = TPM2B_PUBLIC(
            publicArea=TPMT_PUBLIC.parse(
                "ecc256:ecdsa-sha256", objectAttributes=AK_ATTRIBUTES & ~RESTRICTED
            )
        )
        for _ in range(3):
            ectx.create_primary(TPM2B_SENSITIVE_CREATE(), tmpl, ESYS_TR.OWNER)
        _, data = ectx.get_capability(TPM2_CAP.HANDLES, TPM2_HC.TRANSIENT_FIRST, 64)
        assert len(data.data.handles) == 3
    server = server_for(manufacturer_ca.cert_pem, tmp_path)
    await attest(server, TpmAgentAttestor(swtpm.tcti, "rsa-2048"))
    with ESAPI(TCTILdr(name, conf)) as ectx:
        _, data = ectx.get_capability(TPM2_CAP.HANDLES, TPM2_HC.TRANSIENT_FIRST, 64)
        assert len(data.data.handles) == 0


async def test_oversize_and_malformed_payloads_are_rejected(
    manufacturer_ca: ManufacturerCa, tmp_path: Path
) -> None:
    server = server_for(manufacturer_ca.cert_pem, tmp_path)

    async def never(_: bytes) -> bytes:
        raise AssertionError("no challenge expected")

    with pytest.raises(AttestationFailed, match="at most 65536 allowed"):
        await server.attest(b"{" + b" " * 70000 + b"}", never)
    with pytest.raises(AttestationFailed, match="not valid JSON"):
        await server.attest(b"\xff", never)
    with pytest.raises(AttestationFailed, match="duplicate JSON key"):
        await server.attest(b'{"v":1,"v":1}', never)


async def test_registered_plugins_attest_from_config(
    swtpm: SwtpmProcess, manufacturer_ca: ManufacturerCa, tmp_path: Path
) -> None:
    """The names in config build working halves through the core registries."""
    from plastron.configs.plugin_blocks import PluginConfig  # noqa: PLC0415
    from plastron.plugins import PluginContext, load_plugins  # noqa: PLC0415

    registries = load_plugins(["plastron.tpm.plugin"])

    (tmp_path / "ca.pem").write_bytes(manufacturer_ca.cert_pem)
    ctx = PluginContext(trust_domain=TD, data_dir=tmp_path / "data", base_dir=tmp_path)
    server = registries.server_node_attestors.create(
        PluginConfig("NodeAttestor", "tpm", {"endorsement_ca_path": "ca.pem", "pcrs": [7]}), ctx
    )
    agent = registries.agent_node_attestors.create(
        PluginConfig("NodeAttestor", "tpm", {"tcti": swtpm.tcti}), ctx
    )
    result = await server.attest(await agent.payload(), agent.answer)
    assert result.agent_id.path.startswith("/spire/agent/tpm/")
    # The agent's TLS stack shares the TPM with the agent: swtpm alone is refused ...
    with pytest.raises(ConfigError, match="serves one client at a time"):
        registries.key_managers.create(PluginConfig("KeyManager", "tpm", {"tcti": swtpm.tcti}), ctx)
    # ... a resource manager is accepted (tests/e2e/tpm runs tpm2-abrmd in front of swtpm).
    km = registries.key_managers.create(PluginConfig("KeyManager", "tpm", {"tcti": "tabrmd"}), ctx)
    assert km.get_public_keys() == []
