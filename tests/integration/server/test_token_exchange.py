"""The agentless token exchange on a real server: ``POST /api/v1/token`` over HTTPS (the
server's own SVID) with a GCP identity token verified by the server's gcp_iit NodeAttestor
(keys from a JWKS file, as a test stands in for Google), entries under
``spiffe://example.org/spire/agentless/gcp_iit``, and each refusal the exchange promises."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import itertools
import json
import logging
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plastron.logs import _FIELDS_ATTR as FIELDS_ATTR
from plastron.proto.agentless.v1 import agentless_pb2
from plastron.proto.agentless.v1.agentless_grpc import TokenExchangeStub
from plastron.proto.spire.api.server.entry.v1 import entry_pb2
from plastron.spiffe.jwtsvid import validate_jwt_svid
from plastron.spiffe.x509svid import validate_x509_svid
from tests.cloud.gcp import gcp_claims
from tests.cloud.tokens import Issuer
from tests.processes import free_port

from .server_harness import Harness, make_csr, running_server
from .test_api import entry

PARENT = "/spire/agentless/gcp_iit"
AUDIENCE = ["https://api.example.org"]
_instances = itertools.count(7_000_000)


@dataclass
class Exchange:
    harness: Harness
    port: int
    google: Issuer
    tls: ssl.SSLContext

    def token(self, **override: Any) -> str:
        return self.google.sign(gcp_claims(str(next(_instances)), **override))

    async def post(self, credential: str | None, body: dict[str, Any] | None) -> tuple[int, Any]:
        # The server runs on this event loop: the blocking client runs in a thread.
        return await asyncio.to_thread(self._post, credential, body)

    def _post(self, credential: str | None, body: dict[str, Any] | None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else b""
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.port}/api/v1/token", data=data, method="POST"
        )
        request.add_header("Content-Type", "application/json")
        if credential is not None:
            request.add_header("Authorization", f"Bearer {credential}")
        try:
            with urllib.request.urlopen(request, context=self.tls, timeout=30) as resp:
                return int(resp.status), json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), json.loads(exc.read())


async def add_entries(h: Harness, *entries: Any) -> None:
    stub = h.entry_stub(h.local())
    resp = await stub.BatchCreateEntry(entry_pb2.BatchCreateEntryRequest(entries=list(entries)))
    assert all(r.status.code == 0 for r in resp.results), resp


@pytest.fixture
async def exchange(tmp_path: Path) -> AsyncIterator[Exchange]:
    async with exchange_server(tmp_path, "") as ex:
        yield ex


@contextlib.asynccontextmanager
async def exchange_server(
    tmp_path: Path, listener_extra: str, more_plugins: str = "", server_extra: str = ""
) -> AsyncIterator[Exchange]:
    google = Issuer.make(21)
    (tmp_path / "jwks.json").write_text(google.jwks())
    port = free_port()
    plugins = f"""NodeAttestor "gcp_iit" {{ plugin_data {{
        projectid_allow_list = ["proj-a", "proj-b"]
        jwks_file = "{tmp_path}/jwks.json"
    }} }}
    {more_plugins}"""
    listener = (
        f'agentless_exchange {{ bind_address = "127.0.0.1"\n bind_port = {port}\n'
        f"{listener_extra} }}\n{server_extra}"
    )
    async with running_server(tmp_path, extra_server=listener, extra_plugins=plugins) as h:
        bundle = await h.bundle()
        tls = ssl.create_default_context(cadata=bundle.to_pem().decode())
        tls.check_hostname = False  # the server SVID names a SPIFFE ID, not a host
        await add_entries(
            h,
            entry("/lambda/billing", PARENT, "gcp_iit:project-id:proj-a"),
            entry("/lambda/reports", PARENT, "gcp_iit:project-id:proj-b"),
            entry("/lambda/reports-admin", PARENT, "gcp_iit:project-id:proj-b"),
        )
        yield Exchange(h, port, google, tls)


async def test_gcp_token_exchanged_for_a_jwt_svid_and_an_x509_svid(
    exchange: Exchange, caplog: pytest.LogCaptureFixture
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = base64.b64encode(make_csr(key)).decode()
    with caplog.at_level(logging.INFO, logger="plastron.audit"):
        status, doc = await exchange.post(exchange.token(), {"audience": AUDIENCE, "csr": csr})
    assert status == 200, doc
    assert doc["spiffe_id"] == "spiffe://example.org/lambda/billing"
    bundle = await exchange.harness.bundle()
    now = dt.datetime.now(dt.UTC)
    svid = validate_jwt_svid(
        doc["token"], audience=AUDIENCE[0], authorities=bundle.jwt_keys(), now=now
    )
    assert str(svid.spiffe_id) == doc["spiffe_id"]
    chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in doc["x509_svid"]]
    roots = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in doc["bundle"]]
    assert str(validate_x509_svid(chain, roots, now=now)) == doc["spiffe_id"]
    assert chain[0].public_key() == key.public_key()
    audits = [getattr(r, FIELDS_ATTR) for r in caplog.records if r.msg == "token exchange"]
    assert len(audits) == 1
    assert audits[0]["status"] == "ok" and audits[0]["spiffe_id"] == doc["spiffe_id"]
    assert audits[0]["attestation_type"] == "gcp_iit" and audits[0]["caller_addr"] == "127.0.0.1"


async def test_a_replayed_credential_is_refused(exchange: Exchange) -> None:
    token = exchange.token()
    assert (await exchange.post(token, {"audience": AUDIENCE}))[0] == 200
    status, doc = await exchange.post(token, {"audience": AUDIENCE})
    assert (status, doc["error"]) == (400, "invalid_grant")
    assert "already exchanged (replay)" in doc["error_description"]


async def test_several_matches_need_a_spiffe_id_the_credential_matches(
    exchange: Exchange,
) -> None:
    status, doc = await exchange.post(exchange.token(project="proj-b"), {"audience": AUDIENCE})
    assert (status, doc["error"]) == (400, "invalid_target")
    assert (
        "spiffe://example.org/lambda/reports, spiffe://example.org/lambda/reports-admin"
        in (doc["error_description"])
    )
    wanted = "spiffe://example.org/lambda/reports-admin"
    token = exchange.token(project="proj-b")
    status, doc = await exchange.post(token, {"audience": AUDIENCE, "spiffe_id": wanted})
    assert (status, doc["spiffe_id"]) == (200, wanted)
    other = "spiffe://example.org/lambda/billing"  # proj-a's entry: not this credential's
    status, doc = await exchange.post(
        exchange.token(project="proj-b"), {"audience": AUDIENCE, "spiffe_id": other}
    )
    assert (status, doc["error"]) == (400, "invalid_target")
    assert (
        "does not match an entry for 'spiffe://example.org/lambda/billing'"
        in (doc["error_description"])
    )


async def test_refusals_of_credentials(exchange: Exchange) -> None:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    cases = [
        (exchange.token(now=old), "invalid_grant", "expired"),
        (exchange.token(audience="someone-else"), "invalid_grant", "audience"),
        (Issuer.make(22).sign(gcp_claims("1")), "invalid_grant", "gcp_iit"),
        (exchange.token(project="proj-c"), "invalid_grant", "proj-c"),
    ]
    for credential, error, needle in cases:
        status, doc = await exchange.post(credential, {"audience": AUDIENCE})
        assert (status, doc["error"]) == (400, error), doc
        assert needle in doc["error_description"], doc


async def test_refusals_of_requests(exchange: Exchange) -> None:
    status, doc = await exchange.post(None, {"audience": AUDIENCE})
    assert (status, doc["error"]) == (401, "invalid_client")
    status, doc = await exchange.post(exchange.token(), {})
    assert (status, doc["error"]) == (400, "invalid_request")
    assert "audience" in doc["error_description"]
    status, doc = await exchange.post(exchange.token(), {"audience": AUDIENCE, "scope": "x"})
    assert "unknown key 'scope'" in doc["error_description"]
    status, doc = await exchange.post("not-a-jwt", {"audience": AUDIENCE})
    assert (status, doc["error"]) == (400, "invalid_request")


async def test_selectors_matching_no_entry_are_refused(exchange: Exchange) -> None:
    store = exchange.harness.server.datastore
    assert store is not None
    for found in await store.list_all_entries():
        if str(found.spiffe_id).endswith("/billing"):
            await store.delete_entry(found.entry_id)
    # Sharing one selector is not enough: every selector of the entry must be the credential's.
    await add_entries(
        exchange.harness,
        entry("/lambda/eu", PARENT, "gcp_iit:project-id:proj-a", "gcp_iit:zone:europe-west1-b"),
        # Another parent (an agent's workloads, another method) is never the exchange's.
        entry("/on-a-node", "/spire/agent/gcp_iit/proj-a/1", "gcp_iit:project-id:proj-a"),
        entry("/on-azure", "/spire/agentless/azure_msi", "gcp_iit:project-id:proj-a"),
    )
    token = exchange.token(project="proj-a")
    status, doc = await exchange.post(token, {"audience": AUDIENCE})
    assert (status, doc["error"]) == (400, "invalid_target"), doc
    assert (
        "no entry under spiffe://example.org/spire/agentless/gcp_iit matches"
        in (doc["error_description"])
    )
    # Not burnt by the refusal: once an entry exists, the same credential is exchanged.
    await add_entries(exchange.harness, entry("/lambda/billing", PARENT, "gcp_iit:zone:us-west1-b"))
    assert (await exchange.post(token, {"audience": AUDIENCE}))[0] == 200


async def test_a_source_over_its_rate_is_refused(tmp_path: Path) -> None:
    limits = "rate_limit_per_second = 1\n rate_limit_burst = 2"
    async with exchange_server(tmp_path, limits) as ex:
        answers = [await ex.post("not-a-jwt", {"audience": AUDIENCE}) for _ in range(4)]
    errors = [doc["error"] for _, doc in answers]
    # Two from the burst, at most one refilled in the time four loopback requests take.
    assert errors[:2] == ["invalid_request", "invalid_request"]
    assert answers[-1] == (
        429,
        {
            "error": "slow_down",
            "error_description": "too many exchanges from 127.0.0.1; retry later",
        },
    )


async def test_the_same_exchange_over_grpc(exchange: Exchange) -> None:
    channel = await exchange.harness.tls()  # TLS to the server API, no client certificate
    stub = TokenExchangeStub(channel)
    key = ec.generate_private_key(ec.SECP256R1())
    token = exchange.token()
    request = agentless_pb2.ExchangeRequest(credential=token, audience=AUDIENCE, csr=make_csr(key))
    resp = await stub.Exchange(request)
    assert resp.spiffe_id == "spiffe://example.org/lambda/billing"
    bundle = await exchange.harness.bundle()
    now = dt.datetime.now(dt.UTC)
    svid = validate_jwt_svid(resp.token, audience=AUDIENCE, authorities=bundle.jwt_keys(), now=now)
    assert str(svid.spiffe_id) == resp.spiffe_id
    chain = [x509.load_der_x509_certificate(c) for c in resp.x509_svid]
    roots = [x509.load_der_x509_certificate(c) for c in resp.bundle]
    assert str(validate_x509_svid(chain, roots, now=now)) == resp.spiffe_id
    with pytest.raises(GRPCError) as replay:
        await stub.Exchange(request)
    assert replay.value.status == Status.PERMISSION_DENIED
    assert replay.value.message is not None and "already exchanged" in replay.value.message
    with pytest.raises(GRPCError) as bad:
        await stub.Exchange(agentless_pb2.ExchangeRequest(credential="x", audience=AUDIENCE))
    assert bad.value.status == Status.INVALID_ARGUMENT


async def test_audit_lines_never_hold_the_credential(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with exchange_server(tmp_path, "", server_extra="audit_log_enabled = true") as ex:
        token = ex.token()
        with caplog.at_level(logging.INFO, logger="plastron.audit"):
            stub = TokenExchangeStub(await ex.harness.tls())
            await stub.Exchange(agentless_pb2.ExchangeRequest(credential=token, audience=AUDIENCE))
            assert (await ex.post(ex.token(), {"audience": AUDIENCE}))[0] == 200
    lines = [getattr(r, FIELDS_ATTR, {}) for r in caplog.records if r.name == "plastron.audit"]
    api_calls = [f for f in lines if f.get("method") == "Exchange"]
    assert len(api_calls) == 1 and '"credential":"[redacted]"' in api_calls[0]["request"]
    assert len([f for f in lines if f.get("method") == "TokenExchange"]) == 2
    signature = token.rsplit(".", 1)[1]
    assert not any(signature in str(f) for f in lines)


async def test_listener_refuses_malformed_http(exchange: Exchange) -> None:
    async def raw(data: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", exchange.port, ssl=exchange.tls)
        writer.write(data)
        answer = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        return answer

    auth = f"Authorization: Bearer {exchange.token()}\r\n"
    cases = [
        (b"GET /api/v1/token HTTP/1.1\r\n\r\n", b"405", b"takes POST"),
        (b"POST /other HTTP/1.1\r\n\r\n", b"404", b"no such endpoint"),
        (
            f"POST /api/v1/token HTTP/1.1\r\n{auth}Content-Length: 999999\r\n\r\n".encode(),
            b"413",
            b"Content-Length must be",
        ),
        (
            b"POST /api/v1/token HTTP/1.1\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n",
            b"431",
            b"request header too large",
        ),
        (
            f"POST /api/v1/token HTTP/1.1\r\n{auth}{auth}\r\n".encode(),
            b"400",
            b"given twice",
        ),
    ]
    for request, status, reason in cases:
        answer = await raw(request)
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
        assert reason in answer and b'"error": "invalid_request"' in answer


async def test_listener_serves_oidc_discovery_for_the_jwt_issuer(tmp_path: Path) -> None:
    issuer = "https://oidc.example.org/td"
    async with exchange_server(tmp_path, "", server_extra=f'jwt_issuer = "{issuer}"') as ex:

        async def get(path: str) -> tuple[bytes, Any]:
            reader, writer = await asyncio.open_connection("127.0.0.1", ex.port, ssl=ex.tls)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: anything\r\n\r\n".encode())
            answer = await asyncio.wait_for(reader.read(), 30)
            writer.close()
            head, _, body = answer.partition(b"\r\n\r\n")
            return head.split(b"\r\n")[0], json.loads(body)

        status, doc = await get("/td/.well-known/openid-configuration")
        assert status == b"HTTP/1.1 200 OK"
        assert (doc["issuer"], doc["jwks_uri"]) == (issuer, issuer + "/keys")
        status, jwks = await get("/td/keys")
        assert status == b"HTTP/1.1 200 OK" and all(k["use"] == "sig" for k in jwks["keys"])
        _, exchanged = await ex.post(ex.token(), {"audience": AUDIENCE})
        key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(exchanged["token"])["kid"]]
        claims = jwt.decode(exchanged["token"], key, algorithms=["ES256"], audience=AUDIENCE[0])
        assert (claims["iss"], claims["sub"]) == (issuer, exchanged["spiffe_id"])
