"""Every attestation parser fails closed, through a real ``plastron-server`` process.

One server runs all four methods (join_token, x509pop, tpm with an EK hash allow-list,
tpm_devid). Each case sends a malformed payload, or a well-formed payload followed by a
malformed challenge response, over the TLS port as an agent would. Every one must end in
PERMISSION_DENIED or INVALID_ARGUMENT with a message that names the method and the rule; the
server log must hold no traceback and no "internal error"; no node may be admitted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from plastron.attestors.x509pop.wire import encode_payload
from plastron.proto.grpc.health.v1 import health_pb2
from plastron.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from plastron.proto.spire.api.types import bundle_pb2
from plastron.spiffe.ids import TrustDomain, server_id
from plastron.tpm.messages import b64
from plastron.transport.client import open_channel
from plastron.transport.tls import client_ssl_context
from tests.e2e.conftest import PlastronServerProcess
from tests.integration.attestation.forged_tpm import NOW, ForgedTpm, with_unknown_key_algorithm
from tests.processes import free_port
from tests.raw_grpc import call_with_raw_bytes
from tests.unit.attestors.x509pop_pki import Issued, make_ca, make_leaf

TD = TrustDomain("example.org")
CLEAN = {Status.PERMISSION_DENIED, Status.INVALID_ARGUMENT}
NESTED = b"[" * 60_000  # under the 64 KiB bound, far beyond the parser's recursion limit
HUGE_INT = b"9" * 5_000  # beyond Python's 4300-digit int conversion limit
NON_UTF8 = b'{"v": "\xff\xfe"}'
CASE_DEADLINE = 20.0  # generous: a refusal takes milliseconds; a hung stream is a failure


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    payload: bytes
    answer: bytes | None = None  # sent at the first challenge; None: a challenge is a failure
    expect: str = ""  # a fragment of the server's message


@dataclass
class Setup:
    server: PlastronServerProcess
    bundle: list[x509.Certificate]
    forged: ForgedTpm
    node: Issued


def _config(base: Path, port: int, trust: dict[str, Path], x509pop_ca: Path) -> str:
    return f"""
server {{
  trust_domain = "{TD.name}"
  bind_address = "127.0.0.1"
  bind_port = {port}
  socket_path = "{base}/api.sock"
  data_dir = "{base}/data"
  log_level = "DEBUG"
  ratelimit {{ attestation = false }}
}}
plugins {{
  DataStore "sql" {{ plugin_data {{ database_type = "sqlite3"
    connection_string = "{base}/data/ds.sqlite3" }} }}
  KeyManager "memory" {{ plugin_data {{}} }}
  NodeAttestor "join_token" {{ plugin_data {{}} }}
  NodeAttestor "x509pop" {{ plugin_data {{ ca_bundle_path = "{x509pop_ca}" }} }}
  NodeAttestor "tpm" {{ plugin_data {{ ek_hash_path = "{trust["ek_hashes"]}" }} }}
  NodeAttestor "tpm_devid" {{ plugin_data {{
    devid_ca_path = "{trust["devid_ca"]}"
    endorsement_ca_path = "{trust["ek_ca"]}"
  }} }}
}}
"""


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    base = Path(tempfile.mkdtemp(prefix="pl-parse-", dir="/tmp"))
    forged = ForgedTpm.create()
    trust = forged.write_trust(base / "trust")
    valid = {"not_before": NOW - dt.timedelta(days=1), "not_after": NOW + dt.timedelta(days=30)}
    ca = make_ca("x509pop parsers CA", key=ec.generate_private_key(ec.SECP256R1()), **valid)
    node = make_leaf(ca, key=ec.generate_private_key(ec.SECP256R1()), **valid)
    (base / "x509pop-ca.pem").write_bytes(ca.pem())
    port = free_port()
    server = PlastronServerProcess.in_dir(
        base, port, _config(base, port, trust, base / "x509pop-ca.pem")
    )
    try:
        server.start()
        yield Setup(server, server.bundle_certificates(), forged, node)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _tpm_json(**fields: object) -> bytes:
    return json.dumps({"v": 1, **fields}).encode()


def payload_cases(setup: Setup) -> list[Case]:
    """Malformed payloads: refused before any challenge."""
    forged = setup.forged
    good = json.loads(forged.tpm_payload())
    devid = json.loads(forged.devid_payload())
    bad_ek_cert = b64(with_unknown_key_algorithm(forged.ek_cert_der()))
    cases = []
    for method in ("tpm", "tpm_devid", "x509pop"):
        cases += [
            Case("nested", method, NESTED, expect="nested too deeply"),
            Case("huge integer", method, b'{"v": ' + HUGE_INT + b"}", expect="number too large"),
            Case("NaN", method, b'{"v": NaN}', expect="not valid JSON"),
            Case("non-UTF-8", method, NON_UTF8, expect="not UTF-8"),
            Case("array", method, b"[1]", expect="must be a JSON object"),
        ]
    return [
        *cases,
        Case("join_token nested", "join_token", NESTED, expect="join_token: token is longer"),
        Case("join_token non-UTF-8", "join_token", b"\xff\xfe", expect="join_token: token is not"),
        Case("version true", "tpm", _tpm_json(**{**good, "v": True}), expect="version True"),
        Case("version 1.0", "tpm", _tpm_json(**{**good, "v": 1.0}), expect="version 1.0 is not"),
        Case(
            "version inf",
            "tpm",
            forged.tpm_payload().replace(b'"v":1', b'"v":1e999999'),
            expect="version inf is not 1",
        ),
        Case("ek_pub number", "tpm", _tpm_json(**{**good, "ek_pub": 7}), expect="field ek_pub"),
        Case("ek_chain dict", "tpm", _tpm_json(**{**good, "ek_chain": {}}), expect="ek_chain"),
        Case("bad base64", "tpm", _tpm_json(**{**good, "ak_pub": "A*=="}), expect="base64"),
        Case(
            "surrogate key",
            "tpm",
            json.dumps({**good, "\ud800\n": 1}).encode(),
            expect="unknown keys '\\ud800\\n'",
        ),
        Case(
            "EK cert key unknown",
            "tpm",
            _tpm_json(**{**good, "ek_cert": bad_ek_cert}),
            expect="tpm: EK certificate cannot be parsed",
        ),
        Case(
            "EK cert key unknown",
            "tpm_devid",
            json.dumps({**devid, "EKCert": bad_ek_cert}).encode(),
            expect="tpm_devid: EK certificate cannot be parsed",
        ),
        Case(
            "DevIDCert dict",
            "tpm_devid",
            json.dumps({**devid, "DevIDCert": {}}).encode(),
            expect="DevIDCert must list",
        ),
        Case("certificates [{}]", "x509pop", b'{"certificates": [{}]}', expect="base64 string"),
        Case("certificates *", "x509pop", b'{"certificates": ["*"]}', expect="not valid base64"),
    ]


def answer_cases(setup: Setup) -> list[Case]:
    """Well-formed payloads that reach the challenge, then a malformed answer."""
    firsts = {
        "tpm": setup.forged.tpm_payload(),
        "tpm_devid": setup.forged.devid_payload(),
        "x509pop": encode_payload([setup.node.der]),
    }
    cases = []
    for method, payload in firsts.items():
        for name, answer, expect in (
            ("nested answer", NESTED, "nested too deeply"),
            ("huge-integer answer", b'{"v": ' + HUGE_INT + b"}", "number too large"),
            ("non-UTF-8 answer", NON_UTF8, "not UTF-8"),
            ("string answer", b'"x"', "must be a JSON object"),
        ):
            cases.append(Case(name, method, payload, answer, expect))
    pcr = {"v": 1, "secret": "AA==", "quote": "AA==", "quote_sig": "AA=="}
    return [
        *cases,
        Case(
            "PCR index '²'",
            "tpm",
            firsts["tpm"],
            json.dumps({**pcr, "pcrs": {"²": "AA=="}}, ensure_ascii=False).encode(),
            "response pcr '²' is not a PCR index",
        ),
        Case(
            "pcrs list",
            "tpm",
            firsts["tpm"],
            json.dumps({**pcr, "pcrs": [1]}).encode(),
            "pcrs must be an object",
        ),
        Case(
            "DevID number",
            "tpm_devid",
            firsts["tpm_devid"],
            b'{"DevID": 1, "CredActivation": "AA=="}',
            "field DevID",
        ),
        Case(
            "rsa_signature list",
            "x509pop",
            firsts["x509pop"],
            b'{"ecdsa_signature": [1]}',
            "must be a JSON object",
        ),
    ]


class _NotRefused(Exception):
    pass


async def attest(setup: Setup, case: Case) -> GRPCError | str:
    """Run AttestAgent as an agent would: the server's refusal, or what happened instead."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )
    ctx = client_ssl_context(trust_bundle=setup.bundle)
    channel = open_channel(
        ("127.0.0.1", setup.server.port), ssl=ctx, expected_server_id=server_id(TD)
    )
    params = agent_pb2.AttestAgentRequest.Params(
        data={"type": case.method, "payload": case.payload},
        params={"csr": csr.public_bytes(serialization.Encoding.DER)},
    )
    try:
        async with agent_grpc.AgentStub(channel).AttestAgent.open(timeout=CASE_DEADLINE) as stream:
            await stream.send_message(agent_pb2.AttestAgentRequest(params=params))
            msg = await stream.recv_message()
            if msg is not None and msg.WhichOneof("step") == "challenge":
                if case.answer is None:
                    raise _NotRefused("the server sent a challenge")  # resets the stream
                reply = agent_pb2.AttestAgentRequest(challenge_response=case.answer)
                await stream.send_message(reply)
                msg = await stream.recv_message()
            if msg is None:  # the status is in the trailers
                await stream.end()
                await stream.recv_trailing_metadata()
            raise _NotRefused(f"not refused: {msg}")
    except GRPCError as exc:
        return exc
    except _NotRefused as exc:
        return str(exc)
    except TimeoutError:
        return f"no status within {CASE_DEADLINE:g}s"
    finally:
        channel.close()


def test_malformed_attestation_input_is_refused_cleanly(setup: Setup) -> None:
    cases = payload_cases(setup) + answer_cases(setup)
    wrong = []
    for case in cases:
        err = asyncio.run(attest(setup, case))
        if isinstance(err, str):
            wrong.append(f"{case.method} {case.name}: {err}")
            continue
        message = err.message or ""
        if err.status not in CLEAN or case.expect not in message:
            wrong.append(f"{case.method} {case.name}: {err.status.name} {message!r}")
        elif not message.startswith(f"{case.method.split('_')[0]}"):
            wrong.append(f"{case.method} {case.name}: message lacks the method: {message!r}")
    log = setup.server.log_path.read_text(errors="replace")
    assert not wrong, "\n".join(wrong)
    assert "Traceback" not in log and "internal error" not in log, log[-4000:]
    agents = setup.server.run_cli("agent", "list")
    assert agents.returncode == 0 and "spiffe://" not in agents.stdout, agents
    print(f"{len(cases)} malformed inputs refused cleanly")


def test_request_that_is_not_protobuf_is_invalid_argument(setup: Setup) -> None:
    """grpclib decodes the request inside the handler: undecodable bytes from an
    unauthenticated peer are the caller's error, not an internal one."""
    methods = {
        "/spire.api.server.agent.v1.Agent/AttestAgent": agent_pb2.AttestAgentResponse,
        "/spire.api.server.bundle.v1.Bundle/GetBundle": bundle_pb2.Bundle,
    }

    async def run() -> dict[str, GRPCError | None]:
        ctx = client_ssl_context(trust_bundle=setup.bundle)
        channel = open_channel(
            ("127.0.0.1", setup.server.port), ssl=ctx, expected_server_id=server_id(TD)
        )
        try:
            return {
                method: await call_with_raw_bytes(channel, method, b"\xff\xff\xff\xff", reply)
                for method, reply in methods.items()
            }
        finally:
            channel.close()

    for method, err in asyncio.run(run()).items():
        assert err is not None, method
        assert err.status == Status.INVALID_ARGUMENT, (method, err)
        assert (err.message or "").startswith("request is not a valid message: "), err
    log = setup.server.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "internal error" not in log, log[-4000:]


def test_health_request_that_is_not_protobuf_is_invalid_argument(setup: Setup) -> None:
    """The admin socket's health service (also polled by ``plastron-server healthcheck``)
    answers undecodable bytes with INVALID_ARGUMENT, not grpclib's UNKNOWN and a traceback."""
    methods = {
        "/grpc.health.v1.Health/Check": health_pb2.HealthCheckResponse,
        "/grpc.health.v1.Health/List": health_pb2.HealthListResponse,
        "/grpc.health.v1.Health/Watch": health_pb2.HealthCheckResponse,
    }

    async def run() -> dict[str, GRPCError | None]:
        channel = Channel(path=setup.server.socket_path)
        try:
            return {
                method: await call_with_raw_bytes(channel, method, b"\xff\xff\xff\xff", reply)
                for method, reply in methods.items()
            }
        finally:
            channel.close()

    async def without_request(method: str) -> GRPCError | None:
        channel = Channel(path=setup.server.socket_path)
        try:
            async with channel.request(
                method, Cardinality.STREAM_STREAM, health_pb2.HealthCheckRequest, reply_type
            ) as stream:
                await stream.send_request(end=True)  # headers and end of stream, no message
                await stream.recv_message()
        except GRPCError as exc:
            return exc
        finally:
            channel.close()
        return None

    reply_type = health_pb2.HealthCheckResponse
    results = asyncio.run(run())
    check = "/grpc.health.v1.Health/Check"
    results[f"{check} without a request"] = asyncio.run(without_request(check))
    for method, err in results.items():
        assert err is not None, method
        assert err.status == Status.INVALID_ARGUMENT, (method, err)
    log = setup.server.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "internal error" not in log, log[-4000:]
