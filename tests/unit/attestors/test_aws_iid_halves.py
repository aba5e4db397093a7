"""aws_iid's two halves built by their registered factories: the agent half against a fake IMDSv2
on loopback, the server half against the fake EC2/IAM/STS APIs on loopback (boto3 unchanged),
with test keys registered as extra certificates for a fake region."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plastron.attestors.aws_iid.wire import Payload, decode_payload, encode_payload
from plastron.attestors.base import AttestationResult
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import AttestationFailed, ConfigError, Unavailable
from plastron.host_services import HostServices
from plastron.plugins import PluginContext, load_plugins
from plastron.spiffe.ids import SpiffeId, TrustDomain
from tests.aws_fake_services import FakeAwsApi, FakeImds, FakeInstance
from tests.aws_fakes import ACCOUNT, REGION, FakeSigner, make_document
from tests.processes import free_port

TD = TrustDomain("example.org")
REGISTRIES = load_plugins(["plastron.attestors.aws_iid.plugin"])
SIGNER = FakeSigner()
KEY_ID, SECRET = "AKIAFAKESTATIC000001", "fake-static-secret"


class Store:
    """The server's agent store as the attestor sees it (node rows by agent ID)."""

    def __init__(self) -> None:
        self.attested: set[SpiffeId] = set()

    async def __call__(self, agent_id: SpiffeId) -> bool:
        return agent_id in self.attested


@pytest.fixture
def certs_dir(tmp_path: Path) -> Path:
    for kind in ("rsa2048", "rsa", "dsa"):
        (tmp_path / f"{kind}.pem").write_bytes(SIGNER.pem(kind))
    return tmp_path


@pytest.fixture
def api() -> Iterator[tuple[FakeAwsApi, str]]:
    fake = FakeAwsApi()
    with fake.run() as url:
        yield fake, url


def server_data(certs_dir: Path, url: str, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "extra_certificates": {
            kind: {REGION: str(certs_dir / f"{kind}.pem")} for kind in ("rsa2048", "rsa", "dsa")
        },
        "access_key_id": KEY_ID,
        "secret_access_key": SECRET,
        "ec2_endpoint": url,
        "iam_endpoint": url,
        "sts_endpoint": url,
    }
    data.update(extra)
    return data


def make_server(data: dict[str, Any], store: Store | None = None) -> Any:
    plugin = PluginConfig("NodeAttestor", "aws_iid", plugin_data=data)
    services = HostServices(agent_attested=store or Store())
    context = PluginContext(trust_domain=TD, services=services)
    return REGISTRIES.server_node_attestors.create(plugin, context)


async def no_challenge(challenge: bytes) -> bytes:
    raise AssertionError("aws_iid has no challenge")


def payload_for(document: bytes, **signatures: str) -> bytes:
    return encode_payload(Payload(document, **signatures))


def attest(server: Any, payload: bytes) -> AttestationResult:
    result: AttestationResult = asyncio.run(server.attest(payload, no_challenge))
    return result


def refused(server: Any, payload: bytes, match: str) -> str:
    with pytest.raises(AttestationFailed, match=match) as info:
        attest(server, payload)
    assert str(info.value).startswith("aws_iid: ")
    return str(info.value)


# ---- agent half ---------------------------------------------------------------------------


def make_agent(endpoint: str, **extra: Any) -> Any:
    plugin = PluginConfig(
        "NodeAttestor", "aws_iid", plugin_data={"ec2_metadata_endpoint": endpoint, **extra}
    )
    return REGISTRIES.agent_node_attestors.create(plugin, PluginContext())


@pytest.mark.parametrize("suffix", ["", "/", "/latest"])
def test_agent_reads_the_document_with_imdsv2(suffix: str) -> None:
    imds = FakeImds(signer=SIGNER)
    with imds.run() as url:
        payload = decode_payload(asyncio.run(make_agent(url + suffix).payload()))
    assert payload.document == imds.document
    assert payload.rsa2048 == imds.body("rsa2048").decode()
    assert payload.signature == imds.body("signature").decode()
    assert imds.requests[0] == ("PUT", "/latest/api/token", True)
    assert [r[2] for r in imds.requests[1:]] == [True, True, True]  # every GET had the token
    assert set(json.loads(encode_payload(payload))) == {"document", "signature", "rsa2048"}


def test_agent_says_one_line_when_the_metadata_service_is_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Unavailable, match=r"^aws_iid: the EC2 metadata service at .* is unre"):
        asyncio.run(make_agent(url, metadata_timeout="2s").payload())


def test_agent_reports_the_metadata_services_http_error() -> None:
    imds = FakeImds(signer=SIGNER)
    with imds.run() as url, pytest.raises(AttestationFailed) as info:
        asyncio.run(make_agent(url + "/nope").payload())
    assert str(info.value) == (
        f"aws_iid: the EC2 metadata service answered PUT /latest/api/token with HTTP 400 "
        f"({url}/nope)"
    )


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"ec2_metadata_endpoint": "169.254.169.254"}, "must be an http"),
        ({"metadata_timeout": "1h"}, "must be at most"),
        ({"endpoint": "http://x"}, 'unknown key "plugins.NodeAttestor.aws_iid.plugin_data.endp'),
    ],
)
def test_agent_config_is_checked(data: dict[str, Any], match: str) -> None:
    plugin = PluginConfig("NodeAttestor", "aws_iid", plugin_data=data)
    with pytest.raises(ConfigError, match=match):
        REGISTRIES.agent_node_attestors.create(plugin, PluginContext())


# ---- server half --------------------------------------------------------------------------


def test_server_admits_with_api_selectors_and_static_credentials(
    certs_dir: Path, api: tuple[FakeAwsApi, str]
) -> None:
    fake, url = api
    doc = make_document(instance_id="i-0000000000000a001")
    fake.add(
        FakeInstance(
            "i-0000000000000a001", tags={"role": "web", "Name": "w1"}, profile="web", roles=["web"]
        )
    )
    result = attest(
        make_server(server_data(certs_dir, url)), payload_for(doc, **SIGNER.signatures(doc))
    )
    assert str(result.agent_id) == (
        f"spiffe://example.org/spire/agent/aws_iid/{ACCOUNT}/{REGION}/i-0000000000000a001"
    )
    assert not result.can_reattest
    assert {str(s) for s in result.selectors} == {
        f"aws_iid:account_id:{ACCOUNT}",
        f"aws_iid:az:{REGION}a",
        "aws_iid:image:id:ami-0abcdef1234567890",
        "aws_iid:instance:id:i-0000000000000a001",
        f"aws_iid:region:{REGION}",
        "aws_iid:tag:role:web",
        "aws_iid:tag:Name:w1",
        "aws_iid:sg:id:sg-0a1b2c3d",
        "aws_iid:sg:name:web",
        f"aws_iid:iamrole:arn:aws:iam::{ACCOUNT}:role/web",
    }
    assert fake.calls == [("DescribeInstances", KEY_ID), ("GetInstanceProfile", KEY_ID)]


def test_assume_role_is_used_for_the_documents_account(
    certs_dir: Path, api: tuple[FakeAwsApi, str]
) -> None:
    fake, url = api
    doc = make_document(instance_id="i-0000000000000a002")
    fake.add(FakeInstance("i-0000000000000a002"))
    server = make_server(server_data(certs_dir, url, assume_role="spire-delegate"))
    attest(server, payload_for(doc, **SIGNER.signatures(doc)))
    assert fake.assumed_roles == [f"arn:aws:iam::{ACCOUNT}:role/spire-delegate"]
    assert fake.calls == [("AssumeRole", KEY_ID), ("DescribeInstances", fake.assumed_key_id)]


def test_instance_the_api_does_not_show_is_refused(
    certs_dir: Path, api: tuple[FakeAwsApi, str]
) -> None:
    fake, url = api
    server = make_server(server_data(certs_dir, url))
    unknown = make_document(instance_id="i-0000000000000a003")
    refused(
        server, payload_for(unknown, **SIGNER.signatures(unknown)), "InvalidInstanceID.NotFound"
    )
    fake.add(FakeInstance("i-0000000000000a004", state="stopped"))
    stopped = make_document(instance_id="i-0000000000000a004")
    refused(server, payload_for(stopped, **SIGNER.signatures(stopped)), "pending or running")


def test_block_device_check(certs_dir: Path, api: tuple[FakeAwsApi, str]) -> None:
    fake, url = api
    now = dt.datetime.now(dt.UTC)
    fake.add(
        FakeInstance(
            "i-0000000000000a005",
            root_attached=now - dt.timedelta(minutes=5),
            interface_attached=now - dt.timedelta(days=3),
        )
    )
    doc = make_document(instance_id="i-0000000000000a005")
    payload = payload_for(doc, **SIGNER.signatures(doc))
    refused(make_server(server_data(certs_dir, url)), payload, "attached 25.* s apart")
    attest(make_server(server_data(certs_dir, url, skip_block_device=True)), payload)
    local = {"account_ids_for_local_validation": [ACCOUNT]}
    attest(make_server(server_data(certs_dir, url, **local)), payload)


def test_pkcs7_alone_needs_the_switch(certs_dir: Path, api: tuple[FakeAwsApi, str]) -> None:
    fake, url = api
    fake.add(FakeInstance("i-0000000000000a006"))
    doc = make_document(instance_id="i-0000000000000a006")
    payload = payload_for(doc, pkcs7=SIGNER.pkcs7(doc))
    refused(make_server(server_data(certs_dir, url)), payload, "allow_dsa_pkcs7 = true")
    attest(make_server(server_data(certs_dir, url, allow_dsa_pkcs7=True)), payload)


def test_the_strongest_signature_is_the_one_verified(
    certs_dir: Path, api: tuple[FakeAwsApi, str]
) -> None:
    fake, url = api
    fake.add(FakeInstance("i-0000000000000a007"))
    doc = make_document(instance_id="i-0000000000000a007")
    other = FakeSigner(slot=5)
    server = make_server(server_data(certs_dir, url))
    # a bad raw signature beside a good rsa2048 is not looked at; the reverse is refused
    attest(server, payload_for(doc, rsa2048=SIGNER.rsa2048(doc), signature=other.signature(doc)))
    payload = payload_for(doc, rsa2048=other.rsa2048(doc), signature=SIGNER.signature(doc))
    refused(server, payload, "rsa2048: signed by serial")


def test_account_allow_list(certs_dir: Path, api: tuple[FakeAwsApi, str]) -> None:
    fake, url = api
    fake.add(FakeInstance("i-0000000000000a008", account="210987654321"))
    doc = make_document(instance_id="i-0000000000000a008", account="210987654321")
    server = make_server(server_data(certs_dir, url, account_allow_list=[ACCOUNT]))
    refused(server, payload_for(doc, **SIGNER.signatures(doc)), "account 210987654321 is not in")
    assert fake.calls == []  # refused before any API call


def test_offline_mode_uses_no_api(certs_dir: Path) -> None:
    doc = make_document(instance_id="i-0000000000000a009")
    data = server_data(certs_dir, "http://127.0.0.1:9", use_ec2_api=False)
    data["account_allow_list"] = [ACCOUNT]
    result = attest(make_server(data), payload_for(doc, **SIGNER.signatures(doc)))
    assert {s.value.split(":")[0] for s in result.selectors} == {
        "account_id", "az", "image", "instance", "region",
    }  # fmt: skip


def test_second_attestation_of_an_instance_is_refused(
    certs_dir: Path, api: tuple[FakeAwsApi, str]
) -> None:
    fake, url = api
    fake.add(FakeInstance("i-0000000000000a010"))
    doc = make_document(instance_id="i-0000000000000a010")
    store = Store()
    server = make_server(server_data(certs_dir, url), store)
    first = attest(server, payload_for(doc, **SIGNER.signatures(doc)))
    store.attested.add(first.agent_id)
    refused(server, payload_for(doc, **SIGNER.signatures(doc)), "already attested .*evict")


HOSTILE_TAGS = ["a/b", "..", ".", "", "a%2Fb", "a:b", "n\u00f6de", "node\u2215evil"]


@pytest.mark.parametrize("tag", HOSTILE_TAGS)
def test_hostile_tag_values_never_build_an_agent_id(
    certs_dir: Path, api: tuple[FakeAwsApi, str], tag: str
) -> None:
    fake, url = api
    fake.add(FakeInstance("i-0000000000000a011", tags={"cluster": tag}))
    doc = make_document(instance_id="i-0000000000000a011")
    template = "/{{ .PluginName }}/{{ .Tags.cluster }}/{{ .InstanceID }}"
    server = make_server(server_data(certs_dir, url, agent_path_template=template))
    message = refused(server, payload_for(doc, **SIGNER.signatures(doc)), "agent_path_template")
    assert "GetInstanceProfile" not in fake.actions()
    assert "/spire/server" not in message


def test_tag_template_builds_the_id_and_a_missing_tag_is_refused(
    certs_dir: Path, api: tuple[FakeAwsApi, str]
) -> None:
    fake, url = api
    fake.add(FakeInstance("i-0000000000000a012", tags={"cluster": "blue-7"}))
    fake.add(FakeInstance("i-0000000000000a013"))
    template = "/{{ .PluginName }}/{{ .Tags.cluster }}/{{ .InstanceID }}"
    server = make_server(server_data(certs_dir, url, agent_path_template=template))
    doc = make_document(instance_id="i-0000000000000a012")
    result = attest(server, payload_for(doc, **SIGNER.signatures(doc)))
    assert result.agent_id.path == "/spire/agent/aws_iid/blue-7/i-0000000000000a012"
    bare = make_document(instance_id="i-0000000000000a013")
    refused(server, payload_for(bare, **SIGNER.signatures(bare)), "has no tag 'cluster'")


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"verify_organization": {}}, "verify_organization is not supported"),
        ({"validate_eks_cluster_membership": {}}, "validate_eks_cluster_membership is not sup"),
        ({"nope": 1}, 'unknown key "plugins.NodeAttestor.aws_iid.plugin_data.nope"'),
        ({"use_ec2_api": False}, "needs account_allow_list"),
        ({"account_allow_list": ["1234"]}, "not a 12-digit account ID"),
        ({"partition": "aws-mars"}, "partition must be one of"),
        ({"assume_role": "a/b"}, "not an IAM role name"),
        ({"ec2_endpoint": "ftp://x"}, "must be an http"),
        ({"agent_path_template": "/{{ .Nope }}"}, "unknown field '.Nope'"),
        ({"extra_certificates": {"ecdsa": {}}}, "extra_certificates.ecdsa.*kinds are"),
        ({"extra_certificates": {"rsa": {REGION: "/nonexistent.pem"}}}, "cannot read"),
    ],
)
def test_server_config_is_checked(certs_dir: Path, extra: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_server(server_data(certs_dir, "http://127.0.0.1:9", **extra))


def test_access_key_without_secret_is_refused(certs_dir: Path) -> None:
    data = server_data(certs_dir, "http://127.0.0.1:9")
    del data["secret_access_key"]
    with pytest.raises(ConfigError, match="both access_key_id and secret_access_key"):
        make_server(data)


def test_tags_template_needs_the_api(certs_dir: Path) -> None:
    data = server_data(
        certs_dir,
        "http://127.0.0.1:9",
        use_ec2_api=False,
        account_allow_list=[ACCOUNT],
        agent_path_template="/{{ .Tags.a }}",
    )
    with pytest.raises(ConfigError, match=r"uses \.Tags, which needs use_ec2_api"):
        make_server(data)
