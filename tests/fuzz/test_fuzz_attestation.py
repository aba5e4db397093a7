"""Bad input at every attestation payload and challenge response: the server halves of x509pop,
tpm and tpm_devid (the payload an agent sends, and its answer to a real challenge), and the
agent halves' reading of a challenge. Seeds are real payloads and answers from the real agent
halves (swtpm for the TPM methods); inputs are random bytes, deep JSON, those seeds with random
edits, and JSON objects of the right shape with wrong values. join_token payloads go through a
real server process (test_fuzz_server_api.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st
from swtpm_fixtures import ManufacturerCa, make_manufacturer_ca, start_copy

from plastron.attestors.base import AgentNodeAttestor, AttestationResult, ServerNodeAttestor
from plastron.attestors.x509pop.agent import X509PopAgentAttestor
from plastron.attestors.x509pop.config import X509PopAgentConfig, X509PopServerConfig
from plastron.attestors.x509pop.server import X509PopServerAttestor
from plastron.clock import SystemClock
from plastron.spiffe.ids import TrustDomain
from plastron.tpm.attestor import TpmAgentAttestor, TpmServerAttestor, TpmServerConfig
from plastron.tpm.device import TpmDevice
from plastron.tpm.devid import TpmDevidAgentAttestor, TpmDevidServerAttestor, TpmDevidServerConfig
from plastron.tpm.structures import parse_tpm2b_public
from tests.fuzz.fuzzing import any_bytes_for, check, fuzz_settings
from tests.unit.attestors.x509pop_pki import make_ca, make_leaf, write_files

TD = TrustDomain("example.org")
NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)


@dataclass
class Method:
    """One method's halves and a real transcript (the seeds)."""

    name: str
    server: ServerNodeAttestor
    agent: AgentNodeAttestor
    payload: bytes
    answer: bytes
    challenge: bytes


async def _transcript(server: ServerNodeAttestor, agent: AgentNodeAttestor) -> tuple[bytes, ...]:
    payload = await agent.payload()
    seen: list[bytes] = []

    async def answer(challenge: bytes) -> bytes:
        seen.extend([challenge, await agent.answer(challenge)])
        return seen[-1]

    result = await server.attest(payload, answer)
    assert isinstance(result, AttestationResult)
    return payload, seen[1], seen[0]


def _method(name: str, server: ServerNodeAttestor, agent: AgentNodeAttestor) -> Method:
    payload, answer, challenge = asyncio.run(_transcript(server, agent))
    return Method(name, server, agent, payload, answer, challenge)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-attestation")


@pytest.fixture(scope="module")
def x509pop(base: Path) -> Method:
    root = make_ca("Fuzz Root", not_before=NOW - DAY)
    inter = make_ca("Fuzz Intermediate", parent=root, not_before=NOW - DAY)
    leaf = make_leaf(inter, not_before=NOW - DAY, not_after=NOW + DAY)
    server = X509PopServerAttestor(X509PopServerConfig(ca_bundle=(root.cert,)), TD, SystemClock())
    config = X509PopAgentConfig.from_plugin_data(write_files(base / "x509pop", leaf, [inter]))
    return _method("x509pop", server, X509PopAgentAttestor(config))


@pytest.fixture(scope="module")
def swtpm_tcti(swtpm_template: Path, base: Path) -> Iterator[str]:
    proc = start_copy(swtpm_template, base / "swtpm")
    try:
        yield proc.tcti
    finally:
        proc.kill()
        shutil.rmtree(base / "swtpm", ignore_errors=True)


@pytest.fixture(scope="module")
def tpm(swtpm_tcti: str, manufacturer_ca: ManufacturerCa) -> Method:
    config = TpmServerConfig(endorsement_ca_path=str(manufacturer_ca.dir / "ca-cert.pem"))
    return _method("tpm", TpmServerAttestor(config, TD), TpmAgentAttestor(swtpm_tcti))


@pytest.fixture(scope="module")
def tpm_devid(swtpm_tcti: str, manufacturer_ca: ManufacturerCa, base: Path) -> Method:
    devid_ca = make_manufacturer_ca(base / "devid-ca", "Fuzz DevID CA")
    blob = TpmDevice(swtpm_tcti).create_devid("ecc-p256")
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node")]))
        .issuer_name(devid_ca.cert.subject)
        .public_key(parse_tpm2b_public(blob.public).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + DAY)
        .sign(devid_ca.key, hashes.SHA256())
    )
    paths = {"cert": base / "devid.pem", "priv": base / "devid.priv", "pub": base / "devid.pub"}
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["priv"].write_bytes(blob.private)
    paths["pub"].write_bytes(blob.public)
    config = TpmDevidServerConfig(
        devid_ca_path=str(devid_ca.dir / "ca-cert.pem"),
        endorsement_ca_path=str(manufacturer_ca.dir / "ca-cert.pem"),
    )
    agent = TpmDevidAgentAttestor(
        str(paths["cert"]), str(paths["priv"]), str(paths["pub"]), tcti=swtpm_tcti
    )
    return _method("tpm_devid", TpmDevidServerAttestor(config, TD), agent)


def _shape(seed: bytes) -> dict[str, Any]:
    value = json.loads(seed)
    assert isinstance(value, dict)
    return value


def fuzz_payload(method: Method, data: st.DataObject) -> None:
    payload = data.draw(any_bytes_for([method.payload], _shape(method.payload)), label="payload")
    check(f"{method.name} payload", asyncio.run, method.server.attest(payload, method.agent.answer))


def fuzz_answer(method: Method, data: st.DataObject) -> None:
    answer = data.draw(any_bytes_for([method.answer], _shape(method.answer)), label="answer")

    async def attest() -> AttestationResult:
        async def reply(challenge: bytes) -> bytes:
            return answer

        return await method.server.attest(method.payload, reply)

    check(f"{method.name} challenge response", asyncio.run, attest())


def fuzz_challenge(method: Method, data: st.DataObject) -> None:
    """The agent half reading a challenge, in the state its seed payload left it in."""
    challenge = data.draw(
        any_bytes_for([method.challenge], _shape(method.challenge)), label="challenge"
    )
    check(f"{method.name} challenge (agent)", asyncio.run, method.agent.answer(challenge))


@fuzz_settings(150)
@given(data=st.data())
def test_x509pop_payloads(x509pop: Method, data: st.DataObject) -> None:
    fuzz_payload(x509pop, data)


@fuzz_settings(150)
@given(data=st.data())
def test_x509pop_challenge_responses(x509pop: Method, data: st.DataObject) -> None:
    fuzz_answer(x509pop, data)


@fuzz_settings(100)
@given(data=st.data())
def test_x509pop_challenges_at_the_agent(x509pop: Method, data: st.DataObject) -> None:
    fuzz_challenge(x509pop, data)


@pytest.mark.swtpm
@fuzz_settings(100)
@given(data=st.data())
def test_tpm_payloads(tpm: Method, data: st.DataObject) -> None:
    fuzz_payload(tpm, data)


@pytest.mark.swtpm
@fuzz_settings(100)
@given(data=st.data())
def test_tpm_challenge_responses(tpm: Method, data: st.DataObject) -> None:
    fuzz_answer(tpm, data)


@pytest.mark.swtpm
@fuzz_settings(30)
@given(data=st.data())
def test_tpm_challenges_at_the_agent(tpm: Method, data: st.DataObject) -> None:
    fuzz_challenge(tpm, data)


@pytest.mark.swtpm
@fuzz_settings(100)
@given(data=st.data())
def test_tpm_devid_payloads(tpm_devid: Method, data: st.DataObject) -> None:
    fuzz_payload(tpm_devid, data)


@pytest.mark.swtpm
@fuzz_settings(100)
@given(data=st.data())
def test_tpm_devid_challenge_responses(tpm_devid: Method, data: st.DataObject) -> None:
    fuzz_answer(tpm_devid, data)


@pytest.mark.swtpm
@fuzz_settings(30)
@given(data=st.data())
def test_tpm_devid_challenges_at_the_agent(tpm_devid: Method, data: st.DataObject) -> None:
    fuzz_challenge(tpm_devid, data)
