"""SPIRE advisory class: JWT-SVID validation (SPIRE 1.12.3 / 1.11.3: the Workload API's
ValidateJWTSVID accepted a token without ``exp``), with the classic JWS forgeries beside it.

Each token is signed (or not) so that it would pass a validator that skipped the one check the
case is about, and is sent to the agent's real Workload API service on a Unix socket, by a
caller that has an entry; the trust domain's JWT authority is a key this test holds. A
control token, valid in every respect, must be accepted, so the refusals are the checks'.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plastron.agent.cache import WorkloadCache
from plastron.agent.workloadapi.endpoint import start_endpoint
from plastron.agent.workloadapi.service import WorkloadAPIService
from plastron.agent.workloadattestor.unix import UnixWorkloadAttestor
from plastron.clock import SystemClock
from plastron.proto.workload import workload_grpc
from plastron.proto.workload import workload_pb2 as pb

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "agent"))
from agent_authority import TestAuthority, entry

AUDIENCE = "backend"
SUBJECT_PATH = "/api"
SECURITY_HEADER = {"workload.spiffe.io": "true"}


@dataclass
class WorkloadApi:
    socket_path: str
    authority: TestAuthority


@pytest.fixture
async def workload_api() -> AsyncIterator[WorkloadApi]:
    base = Path(tempfile.mkdtemp(prefix="pl-jwt-", dir="/tmp"))  # short: Unix socket paths
    clock = SystemClock()
    authority = TestAuthority("example.org", clock.now() - dt.timedelta(seconds=10))
    cache = WorkloadCache(authority.td, clock)
    cache.set_bundle(authority.bundle)
    # The caller (this test process) holds an entry: ValidateJWTSVID answers only such callers.
    uid = f"unix:uid:{os.geteuid()}"
    cache.set_entries([entry("e-api", authority.td, SUBJECT_PATH, uid)])
    service = WorkloadAPIService(cache, [UnixWorkloadAttestor()], clock)
    socket_path = str(base / "api.sock")
    server = await start_endpoint(socket_path, [service], service.callers)
    try:
        yield WorkloadApi(socket_path, authority)
    finally:
        await server.close()
        shutil.rmtree(base, ignore_errors=True)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _claims(authority: TestAuthority, **changes: Any) -> dict[str, Any]:
    now = int(dt.datetime.now(dt.UTC).timestamp())
    claims: dict[str, Any] = {
        "sub": str(authority.td.spiffe_id(SUBJECT_PATH)),
        "aud": [AUDIENCE],
        "iat": now,
        "exp": now + 300,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(authority: TestAuthority, claims: dict[str, Any], kid: str | None = None) -> str:
    headers = {"kid": kid or authority.jwt_kid, "typ": "JWT"}
    return jwt.encode(claims, authority.jwt_key, algorithm="ES256", headers=headers)


def _hand_made(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


def token_for(case: str, authority: TestAuthority) -> str:
    """The token of ``case``: each one valid but for the single property the case is about."""
    if case == "valid_control":
        return _signed(authority, _claims(authority))
    if case == "without_exp":
        return _signed(authority, _claims(authority, exp=None))
    if case == "unknown_kid":
        return _signed(authority, _claims(authority), kid="kid-not-in-the-bundle")
    header = {"kid": authority.jwt_kid, "typ": "JWT"}
    if case == "alg_none":
        return _hand_made({**header, "alg": "none"}, _claims(authority), lambda _: b"")
    if case == "hs256_keyed_with_the_public_key":
        # The confusion attack: the verifier's public key, as PEM, used as an HMAC secret.
        secret = authority.jwt_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return _hand_made(
            {**header, "alg": "HS256"},
            _claims(authority),
            lambda data: hmac.new(secret, data, hashlib.sha256).digest(),
        )
    raise AssertionError(f"unknown case {case}")


async def validate(api: WorkloadApi, token: str) -> pb.ValidateJWTSVIDResponse:
    channel = Channel(path=api.socket_path)
    try:
        stub = workload_grpc.SpiffeWorkloadAPIStub(channel)
        request = pb.ValidateJWTSVIDRequest(audience=AUDIENCE, svid=token)
        return await stub.ValidateJWTSVID(request, metadata=SECURITY_HEADER, timeout=10)
    finally:
        channel.close()


async def test_advisory_jwt_control_token_is_accepted(workload_api: WorkloadApi) -> None:
    response = await validate(workload_api, token_for("valid_control", workload_api.authority))
    assert response.spiffe_id == "spiffe://example.org/api"


REFUSALS = {
    "without_exp": "has no 'exp' claim; it is required",
    "alg_none": "alg 'none' is not allowed; a signature is required",
    "unknown_kid": "key id 'kid-not-in-the-bundle' is not a JWT authority of this bundle",
    "hs256_keyed_with_the_public_key": "HMAC algorithms are refused",
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_advisory_jwt_svid_forgery_is_refused(workload_api: WorkloadApi, case: str) -> None:
    with pytest.raises(GRPCError) as err:
        await validate(workload_api, token_for(case, workload_api.authority))
    assert err.value.status == Status.INVALID_ARGUMENT, err.value
    assert REFUSALS[case] in (err.value.message or ""), err.value.message
