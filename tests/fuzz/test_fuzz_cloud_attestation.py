"""Bad input at the cloud and Kubernetes node attestors' payloads: the server halves of aws_iid,
gcp_iit, azure_msi, k8s_psat and aws_iam, each built by its real factory from the plugin block
its conformance test uses, against the same fake cloud services. None of them has a challenge
round: the payload is the whole proof.

Seeds are real payloads from the real agent halves. Inputs are random bytes, deep JSON, the
seeds with random edits, JSON objects of the seed's shape with wrong values, and the seed with
its token (a JWT) rebuilt from a mutated header and claims. Every refusal must name the agent
as the cause: InvalidArgument for a payload that cannot be read (as SPIRE's attestors answer),
AttestationFailed for one that does not prove what it claims; any other error fails the test.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plastron.attestors.base import AttestationResult, ServerNodeAttestor
from plastron.errors import AttestationFailed, InvalidArgument, PlastronError
from plastron.host_services import HostServices
from plastron.plugins import load_plugins
from plastron.server.config import parse_server_config
from plastron.server.plugin_loading import SERVER_PLUGIN_MODULES
from plastron.spiffe.ids import SpiffeId, TrustDomain
from tests.aws_fake_services import FakeAwsApi
from tests.cloud.azure import FakeAzure
from tests.cloud.gcp import FakeGoogle
from tests.cloud.kubernetes import FakeKubernetes
from tests.cloud.sts import FakeSts
from tests.conformance.nodeattestor_env import AttestEnv, no_challenge_expected
from tests.fuzz.fuzzing import any_bytes_for, check, fuzz_settings, json_objects_like
from tests.integration.aws_iid.test_aws_iid_conformance import AwsIidAdapter
from tests.integration.cloud.test_aws_iam_conformance import AwsIamAdapter
from tests.integration.cloud.test_azure_msi_conformance import AzureMsiAdapter
from tests.integration.cloud.test_gcp_iit_conformance import GcpIitAdapter
from tests.integration.cloud.test_k8s_psat_conformance import K8sPsatAdapter
from tests.integration.server.server_harness import server_conf

TD = TrustDomain("example.org")
# A JWT (JWS compact serialization) inside a payload: header.claims.signature, base64url.
JWT = re.compile(rb"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")


class Adapter(Protocol):
    """What the fuzz tests use of a conformance adapter."""

    kind: str

    def server_plugins(self, case: str) -> str: ...

    async def good(self, env: AttestEnv) -> Any: ...


@dataclass
class CloudMethod:
    name: str
    server: ServerNodeAttestor
    payload: bytes  # a real payload from the agent half (attests once the fake services agree)


async def _never_attested(_agent_id: SpiffeId) -> bool:
    return False  # every instance is new: the trust-on-first-use check never refuses


def _build(adapter: Adapter, base: Path) -> CloudMethod:
    config = parse_server_config(server_conf(base, 0, extra_plugins=adapter.server_plugins("")))
    registries = load_plugins(SERVER_PLUGIN_MODULES)
    context = registries.context(
        trust_domain=TD,
        data_dir=base / "data",
        base_dir=base,
        services=HostServices(agent_attested=_never_attested),
    )
    (plugin,) = (p for p in config.plugins if p.type == "NodeAttestor" and p.name == adapter.kind)
    server = registries.server_node_attestors.create(plugin, context)
    payload = asyncio.run(adapter.good(cast(AttestEnv, None))).payload
    method = CloudMethod(adapter.kind, server, payload)
    assert isinstance(asyncio.run(_attest(method, payload)), AttestationResult)  # a true seed
    return method


async def _attest(method: CloudMethod, payload: bytes) -> AttestationResult:
    """The server half's verdict; a refusal that does not blame the payload fails the test."""
    try:
        return await method.server.attest(payload, no_challenge_expected)
    except (AttestationFailed, InvalidArgument) as exc:
        assert str(exc).startswith(f"{method.name}: "), f"{method.name}: message {exc}"
        raise
    except PlastronError as exc:
        raise AssertionError(
            f"{method.name}: {type(exc).__name__} is not a refusal of the payload: {exc}"
        ) from exc


def _unb64url(part: bytes) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4)))


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@st.composite
def jwt_edited(draw: st.DrawFn, seed: bytes) -> bytes:
    """The seed with its JWT rebuilt: header and claims shaped like the originals with some
    values replaced, the signature kept, cut or replaced."""
    found = JWT.search(seed)
    assert found is not None, "the seed holds no JWT"
    header, claims, signature = found.group().split(b".")
    parts = [
        _b64url(draw(json_objects_like(_unb64url(header)))),
        _b64url(draw(json_objects_like(_unb64url(claims)))),
        draw(st.sampled_from([signature, signature[: len(signature) // 2], b""]))
        if draw(st.booleans())
        else _b64url(draw(st.binary(max_size=300))),
    ]
    return seed[: found.start()] + b".".join(parts) + seed[found.end() :]


def payloads_for(seed: bytes) -> st.SearchStrategy[bytes]:
    try:
        shape = json.loads(seed)
    except ValueError:
        shape = None
    options = any_bytes_for([seed], shape if isinstance(shape, dict) else None)
    if JWT.search(seed):
        options = options | jwt_edited(seed)
    return cast(st.SearchStrategy[bytes], options)


def fuzz_payload(method: CloudMethod, data: st.DataObject) -> None:
    payload = data.draw(payloads_for(method.payload), label="payload")
    check(f"{method.name} payload", asyncio.run, _attest(method, payload))


# ---- the methods, each with its fake services ------------------------------------------------


def _method(
    tmp_path_factory: pytest.TempPathFactory, make: Callable[[Path], Adapter]
) -> CloudMethod:
    base = tmp_path_factory.mktemp("fuzz-cloud")
    return _build(make(base), base)


@pytest.fixture(scope="module")
def aws_iid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudMethod]:
    api = FakeAwsApi()
    with api.run() as url:
        yield _method(tmp_path_factory, lambda base: AwsIidAdapter(base, api, url))


@pytest.fixture(scope="module")
def gcp_iit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudMethod]:
    with FakeGoogle() as google:
        yield _method(tmp_path_factory, lambda base: GcpIitAdapter(base, google))


@pytest.fixture(scope="module")
def azure_msi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudMethod]:
    with FakeAzure() as azure:
        yield _method(tmp_path_factory, lambda base: AzureMsiAdapter(base, azure))


@pytest.fixture(scope="module")
def k8s_psat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudMethod]:
    base = tmp_path_factory.mktemp("fuzz-kube")
    with FakeKubernetes(base) as kube:
        yield _method(tmp_path_factory, lambda dir_: K8sPsatAdapter(dir_, kube))


@pytest.fixture(scope="module")
def aws_iam(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudMethod]:
    with FakeSts() as sts:
        yield _method(tmp_path_factory, lambda _base: AwsIamAdapter(sts))


@fuzz_settings(120)
@given(data=st.data())
def test_aws_iid_payloads(aws_iid: CloudMethod, data: st.DataObject) -> None:
    fuzz_payload(aws_iid, data)


@fuzz_settings(120)
@given(data=st.data())
def test_gcp_iit_payloads(gcp_iit: CloudMethod, data: st.DataObject) -> None:
    fuzz_payload(gcp_iit, data)


@fuzz_settings(120)
@given(data=st.data())
def test_azure_msi_payloads(azure_msi: CloudMethod, data: st.DataObject) -> None:
    fuzz_payload(azure_msi, data)


@fuzz_settings(120)
@given(data=st.data())
def test_k8s_psat_payloads(k8s_psat: CloudMethod, data: st.DataObject) -> None:
    fuzz_payload(k8s_psat, data)


@fuzz_settings(120)
@given(data=st.data())
def test_aws_iam_payloads(aws_iam: CloudMethod, data: st.DataObject) -> None:
    fuzz_payload(aws_iam, data)
