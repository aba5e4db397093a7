"""aws_iid runs the NodeAttestor conformance suite (tests/conformance/nodeattestor.py).

Good attempts come from the real agent half reading a fake IMDSv2 on loopback whose document is
signed with test keys; the server trusts those keys as extra certificates for a fake region and
looks instances up in a fake EC2 API. Every good attempt is a fresh instance (trust on first use
admits an instance once). Bad credentials are real signatures with the flaw in question; hostile
agent ID paths come from an EC2 tag used in the template.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from plastron.attestors.aws_iid.agent import AwsIidAgentAttestor
from plastron.attestors.aws_iid.config import AwsIidAgentConfig
from plastron.attestors.aws_iid.wire import Payload, encode_payload
from tests.aws_fake_services import FakeAwsApi, FakeImds, FakeInstance
from tests.aws_fakes import OTHER_REGION, FakeSigner, make_document, sign_cms
from tests.conformance.nodeattestor import NodeAttestorAdapter, NodeAttestorConformance
from tests.conformance.nodeattestor_env import Attempt, AttestEnv, no_challenge_expected

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)
EXPIRED_REGION, YOUNG_REGION = "test-region-3", "test-region-4"
_ids = itertools.count(0xA000)


class AwsIidAdapter(NodeAttestorAdapter):
    kind = "aws_iid"
    message_prefixes = ("aws_iid: ",)
    first_use_only = True
    not_applicable: ClassVar[dict[str, str]] = {
        "challenge": "aws_iid has no challenge round: the signed document is the whole proof"
    }

    def __init__(self, directory: Path, api: FakeAwsApi, api_url: str) -> None:
        self.dir, self.api, self.api_url = directory, api, api_url
        self.signer = FakeSigner()
        self.stranger = FakeSigner(slot=6)  # keys no certificate of the server names
        self.old = FakeSigner(EXPIRED_REGION, slot=7, not_before=NOW - 400 * DAY,
                              not_after=NOW - DAY)  # fmt: skip
        self.young = FakeSigner(YOUNG_REGION, slot=8, not_before=NOW + DAY,
                                not_after=NOW + 400 * DAY)  # fmt: skip
        for signer in (self.signer, self.old, self.young):
            for kind in ("rsa2048", "rsa"):
                (directory / f"{signer.region}-{kind}.pem").write_bytes(signer.pem(kind))

    def server_plugins(self, case: str) -> str:
        template = ""
        if case == "hostile_agent_path":
            template = 'agent_path_template = "/{{ .PluginName }}/{{ .Tags.cluster }}/x"'
        # a kind may be given once: merge each kind's regions
        blocks: dict[str, list[str]] = {}
        for s in (self.signer, self.old, self.young):
            for kind in ("rsa2048", "rsa"):
                blocks.setdefault(kind, []).append(
                    f'"{s.region}" = "{self.dir}/{s.region}-{kind}.pem"'
                )
        extra = " ".join(f"{k} {{ {' '.join(v)} }}" for k, v in blocks.items())
        return f"""NodeAttestor "aws_iid" {{ plugin_data {{
            access_key_id = "AKIAFAKECONFORMANCE1"
            secret_access_key = "fake"
            ec2_endpoint = "{self.api_url}"
            iam_endpoint = "{self.api_url}"
            extra_certificates {{ {extra} }}
            {template}
        }} }}"""

    def _instance(self, **tags: str) -> str:
        instance_id = f"i-{next(_ids):017x}"
        self.api.add(FakeInstance(instance_id, tags=dict(tags)))
        return instance_id

    def _attempt(self, document: bytes, label: str, **signatures: str) -> Attempt:
        return Attempt(encode_payload(Payload(document, **signatures)), no_challenge_expected,
                       label)  # fmt: skip

    async def good(self, env: AttestEnv) -> Attempt:
        document = make_document(instance_id=self._instance())
        imds = FakeImds(signer=self.signer, document=document)
        with imds.run() as url:  # the real agent half reads it over IMDSv2
            agent = AwsIidAgentAttestor(AwsIidAgentConfig(metadata_endpoint=url))
            payload = await agent.payload()
        return Attempt(payload, agent.answer, "fresh instance via IMDSv2")

    async def wrong_key_type(self, env: AttestEnv) -> list[Attempt]:
        doc = make_document(instance_id=self._instance())
        ec_key = ec.generate_private_key(ec.SECP256R1())
        ecdsa_raw = ec_key.sign(doc, ec.ECDSA(hashes.SHA256()))
        # a DSA signature in a CMS naming the region's RSA certificate
        dsa_cms = sign_cms(doc, self.signer.dsa_key, self.signer.dsa_cert,
                           named=self.signer.rsa2048_cert)  # fmt: skip
        return [
            self._attempt(doc, "ECDSA bytes as the RSA signature",
                          signature=base64.b64encode(ecdsa_raw).decode()),
            self._attempt(doc, "DSA-signed CMS as rsa2048",
                          rsa2048=base64.b64encode(dsa_cms).decode()),
        ]  # fmt: skip

    async def expired(self, env: AttestEnv) -> list[Attempt]:
        doc = make_document(region=EXPIRED_REGION, instance_id=self._instance(),
                            pending=NOW - 500 * DAY)  # fmt: skip
        return [
            self._attempt(doc, "rsa2048 by an expired certificate", rsa2048=self.old.rsa2048(doc)),
            self._attempt(doc, "signature by an expired certificate",
                          signature=self.old.signature(doc)),
        ]  # fmt: skip

    async def not_yet_valid(self, env: AttestEnv) -> list[Attempt]:
        doc = make_document(region=YOUNG_REGION, instance_id=self._instance())
        future = make_document(instance_id=self._instance(), pending=NOW + DAY)
        later = make_document(instance_id=self._instance())
        return [
            self._attempt(doc, "certificate valid from tomorrow", rsa2048=self.young.rsa2048(doc)),
            self._attempt(future, "pendingTime tomorrow", rsa2048=self.signer.rsa2048(future)),
            self._attempt(later, "signingTime tomorrow",
                          rsa2048=self.signer.rsa2048(later, signing_time=NOW + DAY)),
        ]  # fmt: skip

    async def untrusted_ca(self, env: AttestEnv) -> list[Attempt]:
        doc = make_document(instance_id=self._instance())
        other = make_document(region=OTHER_REGION, instance_id=self._instance())
        return [
            self._attempt(doc, "rsa2048 by unknown keys", rsa2048=self.stranger.rsa2048(doc)),
            self._attempt(doc, "signature by unknown keys",
                          signature=self.stranger.signature(doc)),
            self._attempt(other, "region with no certificate", rsa2048=self.signer.rsa2048(other)),
        ]  # fmt: skip

    async def hostile_agent_path(self, env: AttestEnv, value: str) -> list[Attempt]:
        doc = make_document(instance_id=self._instance(cluster=value))
        return [self._attempt(doc, f"tag cluster={value!r}", **self.signer.signatures(doc))]


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[FakeAwsApi, str]]:
    api = FakeAwsApi()
    with api.run() as url:
        yield api, url


class TestAwsIidConformance(NodeAttestorConformance):
    @pytest.fixture
    def adapter(self, tmp_path: Path, services: tuple[FakeAwsApi, str]) -> AwsIidAdapter:
        api, url = services
        return AwsIidAdapter(tmp_path, api, url)
