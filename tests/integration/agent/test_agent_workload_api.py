"""The Workload API over a real Unix socket, called by the independent ``spiffe`` client."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import stat

import grpc
import pytest
from agent_authority import TestAuthority, entry
from agent_workload_env import WorkloadApiEnv
from cryptography.x509 import verification
from spiffe import SpiffeId as PySpiffeId
from spiffe import TrustDomain as PyTrustDomain
from spiffe import WorkloadApiClient

from plastron.proto.workload import workload_pb2 as pb
from plastron.proto.workload import workload_pb2_grpc
from plastron.spiffe.jwtsvid import mint_jwt_svid

UID = f"unix:uid:{os.geteuid()}"
HEADER = (("workload.spiffe.io", "true"),)


def _client(env: WorkloadApiEnv) -> WorkloadApiClient:
    return WorkloadApiClient(socket_path=f"unix://{env.socket_path}", default_timeout=5)


def _give_identity(env: WorkloadApiEnv, *paths: str) -> None:
    env.cache.set_entries([entry(f"e{p}", env.ca.td, p, UID) for p in paths])
    env.cache.set_x509_svids({f"e{p}": env.ca.svid(p) for p in paths})


def _raw_call(env: WorkloadApiEnv, method: str, request: object, metadata: object) -> object:
    with grpc.insecure_channel(f"unix://{env.socket_path}") as channel:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
        call = getattr(stub, method)(request, metadata=metadata, timeout=5)
        return (
            call
            if isinstance(call, pb.JWTSVIDResponse | pb.ValidateJWTSVIDResponse)
            else next(call)
        )


async def _raw_code(env: WorkloadApiEnv, method: str, request: object, metadata: object) -> object:
    with pytest.raises(grpc.RpcError) as info:
        await asyncio.to_thread(_raw_call, env, method, request, metadata)
    return info.value.code()  # type: ignore[attr-defined]


async def test_x509_context_fetched_by_spiffe_client_verifies(workload_api: WorkloadApiEnv) -> None:
    env = workload_api
    _give_identity(env, "/web")
    with _client(env) as client:
        ctx = await asyncio.to_thread(client.fetch_x509_context)
    svid = ctx.default_svid
    assert svid.spiffe_id == PySpiffeId("spiffe://example.org/web")
    bundle = ctx.x509_bundle_set.get_bundle_for_trust_domain(PyTrustDomain("example.org"))
    assert bundle is not None
    # Independent chain check with cryptography's X.509 verifier.
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(list(bundle.x509_authorities)))
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=verification.ExtensionPolicy.permit_all(),
        )
        .build_client_verifier()
    )
    verified = verifier.verify(svid.leaf, svid.cert_chain[1:])
    assert verified.chain[-1] == env.ca.ca
    assert svid.private_key.public_key() == svid.leaf.public_key()


async def test_bundles_include_federated_for_entries_that_federate(
    workload_api: WorkloadApiEnv,
) -> None:
    env = workload_api
    other = TestAuthority("other.org", env.ca.now)
    env.cache.set_entries([entry("a", env.ca.td, "/a", UID, federates_with=(other.td,))])
    env.cache.set_x509_svids({"a": env.ca.svid("/a")})
    env.cache.set_federated_bundles({other.td: other.bundle})
    with _client(env) as client:
        bundles = await asyncio.to_thread(client.fetch_x509_bundles)
        jwt_bundles = await asyncio.to_thread(client.fetch_jwt_bundles)
    fed = bundles.get_bundle_for_trust_domain(PyTrustDomain("other.org"))
    assert fed is not None and list(fed.x509_authorities) == [other.ca]
    jwt_fed = jwt_bundles.get_bundle_for_trust_domain(PyTrustDomain("other.org"))
    assert jwt_fed is not None and jwt_fed.get_jwt_authority(other.jwt_kid) is not None


async def test_jwt_svid_fetch_validate_and_cache(workload_api: WorkloadApiEnv) -> None:
    env = workload_api
    _give_identity(env, "/api")
    with _client(env) as client:
        svid = await asyncio.to_thread(client.fetch_jwt_svid, {"backend"})
        again = await asyncio.to_thread(client.fetch_jwt_svid, {"backend"})
        valid = await asyncio.to_thread(client.validate_jwt_svid, svid.token, "backend")
        bundles = await asyncio.to_thread(client.fetch_jwt_bundles)
    assert str(svid.spiffe_id) == "spiffe://example.org/api"
    assert again.token == svid.token and env.jwt_source.calls == 1
    assert str(valid.spiffe_id) == "spiffe://example.org/api"
    own = bundles.get_bundle_for_trust_domain(PyTrustDomain("example.org"))
    assert own is not None and own.get_jwt_authority(env.ca.jwt_kid) is not None


async def test_validate_rejects_wrong_audience_forged_and_unknown_domain(
    workload_api: WorkloadApiEnv,
) -> None:
    env = workload_api
    _give_identity(env, "/api")
    now = dt.datetime.now(dt.UTC)
    good = env.ca.jwt(env.ca.td.spiffe_id("/api"), ("backend",), now=now).token
    forger = TestAuthority("example.org", now)  # same kid, different key
    forged = forger.jwt(forger.td.spiffe_id("/api"), ("backend",), now=now).token
    stranger = TestAuthority("stranger.org", now)
    foreign = stranger.jwt(stranger.td.spiffe_id("/x"), ("backend",), now=now).token
    expired = mint_jwt_svid(
        spiffe_id=env.ca.td.spiffe_id("/api"),
        audience=("backend",),
        issued_at=now - dt.timedelta(minutes=10),
        expires_at=now - dt.timedelta(minutes=5),
        key=env.ca.jwt_key,
        key_id=env.ca.jwt_kid,
    )
    cases = [
        (good, "other-audience"),
        (forged, "backend"),
        (foreign, "backend"),
        (expired, "backend"),
        ("not-a-jwt", "backend"),
        (good, ""),
    ]
    for token, audience in cases:
        request = pb.ValidateJWTSVIDRequest(audience=audience, svid=token)
        code = await _raw_code(env, "ValidateJWTSVID", request, HEADER)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (token[:20], audience)


async def test_missing_security_header_is_invalid_argument(workload_api: WorkloadApiEnv) -> None:
    env = workload_api
    _give_identity(env, "/web")
    for method, request in [
        ("FetchX509SVID", pb.X509SVIDRequest()),
        ("FetchX509Bundles", pb.X509BundlesRequest()),
        ("FetchJWTBundles", pb.JWTBundlesRequest()),
        ("FetchJWTSVID", pb.JWTSVIDRequest(audience=["a"])),
        ("ValidateJWTSVID", pb.ValidateJWTSVIDRequest(audience="a", svid="x")),
    ]:
        assert await _raw_code(env, method, request, ()) == grpc.StatusCode.INVALID_ARGUMENT
        wrong = (("workload.spiffe.io", "false"),)
        assert await _raw_code(env, method, request, wrong) == grpc.StatusCode.INVALID_ARGUMENT


async def test_caller_without_entry_is_permission_denied(workload_api: WorkloadApiEnv) -> None:
    env = workload_api
    env.cache.set_entries([entry("x", env.ca.td, "/x", "unix:uid:99999")])
    env.cache.set_x509_svids({"x": env.ca.svid("/x")})
    for method, request in [
        ("FetchX509SVID", pb.X509SVIDRequest()),
        ("FetchX509Bundles", pb.X509BundlesRequest()),
        ("FetchJWTBundles", pb.JWTBundlesRequest()),
        ("FetchJWTSVID", pb.JWTSVIDRequest(audience=["a"])),
        ("ValidateJWTSVID", pb.ValidateJWTSVIDRequest(audience="a", svid="x.y.z")),
    ]:
        assert await _raw_code(env, method, request, HEADER) == grpc.StatusCode.PERMISSION_DENIED


async def test_jwt_for_a_spiffe_id_the_caller_does_not_hold_is_denied(
    workload_api: WorkloadApiEnv,
) -> None:
    env = workload_api
    _give_identity(env, "/mine")
    request = pb.JWTSVIDRequest(audience=["a"], spiffe_id="spiffe://example.org/theirs")
    assert await _raw_code(env, "FetchJWTSVID", request, HEADER) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    bad = pb.JWTSVIDRequest(audience=["a"], spiffe_id="spiffe://Example.org/x")
    assert await _raw_code(env, "FetchJWTSVID", bad, HEADER) == grpc.StatusCode.INVALID_ARGUMENT
    empty = pb.JWTSVIDRequest(audience=[])
    assert await _raw_code(env, "FetchJWTSVID", empty, HEADER) == grpc.StatusCode.INVALID_ARGUMENT


def test_socket_permissions_let_any_local_user_connect(workload_api: WorkloadApiEnv) -> None:
    sock = os.stat(workload_api.socket_path)
    assert stat.S_ISSOCK(sock.st_mode) and stat.S_IMODE(sock.st_mode) == 0o777
    directory = os.stat(os.path.dirname(workload_api.socket_path))
    assert stat.S_IMODE(directory.st_mode) == 0o755
