"""x509pop runs the NodeAttestor conformance suite (tests/conformance/nodeattestor.py).

The server trusts one root; good nodes hold an EC P-256 leaf under an intermediate and attest
with the real agent half. Bad credentials are real certificates with the flaw in question. For
hostile agent ID paths the server renders ``/x509pop/cn/{{ .Subject.CommonName }}``.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from x509pop_pki import Issued, make_ca, make_leaf, new_key, write_files

from plastron.attestors.x509pop.agent import X509PopAgentAttestor
from plastron.attestors.x509pop.config import X509PopAgentConfig
from plastron.attestors.x509pop.wire import (
    Challenge,
    decode_challenge,
    encode_payload,
    encode_response,
    sign_response,
)
from tests.conformance.nodeattestor import NodeAttestorAdapter, NodeAttestorConformance
from tests.conformance.nodeattestor_env import Attempt, AttestEnv, no_challenge_expected

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)


def _valid(**kw: object) -> dict[str, object]:
    return {"not_before": NOW - DAY, "not_after": NOW + 30 * DAY, **kw}


class X509PopAdapter(NodeAttestorAdapter):
    kind = "x509pop"
    message_prefixes = ("x509pop: ",)

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.root = make_ca("Conformance Root", not_before=NOW - DAY)
        self.inter = make_ca("Conformance Intermediate", parent=self.root, not_before=NOW - DAY)
        (directory / "root.pem").write_bytes(self.root.pem())
        self._n = 0

    def server_plugins(self, case: str) -> str:
        template = ""
        if case == "hostile_agent_path":
            template = 'agent_path_template = "/x509pop/cn/{{ .Subject.CommonName }}"'
        return f"""NodeAttestor "x509pop" {{ plugin_data {{
            ca_bundle_path = "{self.dir}/root.pem"
            {template}
        }} }}"""

    def _agent(self, node: Issued, intermediates: list[Issued]) -> X509PopAgentAttestor:
        self._n += 1
        data = write_files(self.dir / f"agent-{self._n}", node, intermediates)
        return X509PopAgentAttestor(X509PopAgentConfig.from_plugin_data(data))

    async def _attempt(
        self, node: Issued, label: str, chain: list[Issued] | None = None
    ) -> Attempt:
        agent = self._agent(node, [self.inter] if chain is None else chain)
        return Attempt(await agent.payload(), agent.answer, label)

    async def good(self, env: AttestEnv) -> Attempt:
        return await self._attempt(make_leaf(self.inter, **_valid()), "EC P-256 leaf")  # type: ignore[arg-type]

    async def wrong_key_type(self, env: AttestEnv) -> list[Attempt]:
        ed_leaf = make_leaf(self.inter, key=ed25519.Ed25519PrivateKey.generate(), **_valid())  # type: ignore[arg-type]
        ec_node = make_leaf(self.inter, **_valid())  # type: ignore[arg-type]
        rsa_key = new_key("rsa-2048", slot=40)
        assert isinstance(rsa_key, rsa.RSAPrivateKey)

        async def rsa_answer(blob: bytes) -> bytes:
            sent = decode_challenge(blob)  # an ECDSA challenge, answered with an RSA signature
            return encode_response(
                sign_response(rsa_key, Challenge("rsa", sent.nonce), os.urandom(32))
            )

        return [
            Attempt(
                encode_payload([ed_leaf.der, self.inter.der]),
                no_challenge_expected,
                "Ed25519 leaf",
            ),
            Attempt(
                encode_payload([ec_node.der, self.inter.der]),
                rsa_answer,
                "RSA answer for an EC leaf",
            ),
        ]

    async def expired(self, env: AttestEnv) -> list[Attempt]:
        old_inter = make_ca(
            "Conformance Intermediate",
            parent=self.root,
            key=self.inter.key,
            not_before=NOW - 10 * DAY,
            not_after=NOW - DAY,
        )
        leaf = make_leaf(self.inter, not_before=NOW - 2 * DAY, not_after=NOW - DAY)
        return [
            await self._attempt(leaf, "leaf expired yesterday"),
            await self._attempt(
                make_leaf(old_inter, **_valid()),  # type: ignore[arg-type]
                "intermediate expired yesterday",
                [old_inter],
            ),
        ]

    async def not_yet_valid(self, env: AttestEnv) -> list[Attempt]:
        new_inter = make_ca(
            "Conformance Intermediate",
            parent=self.root,
            key=self.inter.key,
            not_before=NOW + DAY,
            not_after=NOW + 60 * DAY,
        )
        leaf = make_leaf(self.inter, not_before=NOW + DAY, not_after=NOW + 2 * DAY)
        return [
            await self._attempt(leaf, "leaf valid from tomorrow"),
            await self._attempt(
                make_leaf(new_inter, **_valid()),  # type: ignore[arg-type]
                "intermediate valid from tomorrow",
                [new_inter],
            ),
        ]

    async def untrusted_ca(self, env: AttestEnv) -> list[Attempt]:
        other_root = make_ca("Other Root", not_before=NOW - DAY)
        # same name as the trusted intermediate, its own key, signed by itself
        impostor = make_ca("Conformance Intermediate", key=new_key(slot=41), not_before=NOW - DAY)
        self_signed_leaf = make_leaf(
            make_ca("node-self", key=new_key(slot=42), not_before=NOW - DAY, is_ca=False),
            key=new_key(slot=42),
            **_valid(),  # type: ignore[arg-type]
        )
        return [
            await self._attempt(
                make_leaf(other_root, **_valid()),  # type: ignore[arg-type]
                "leaf under another root",
                [other_root],
            ),
            await self._attempt(
                make_leaf(impostor, **_valid()),  # type: ignore[arg-type]
                "leaf under a CA that only shares the trusted intermediate's name",
                [impostor],
            ),
            await self._attempt(self_signed_leaf, "self-issued leaf", []),
        ]

    async def hostile_agent_path(self, env: AttestEnv, value: str) -> list[Attempt]:
        leaf = make_leaf(self.inter, cn=value, **_valid())  # type: ignore[arg-type]
        return [await self._attempt(leaf, f"subject CN {value!r}")]


class TestX509PopConformance(NodeAttestorConformance):
    @pytest.fixture
    def adapter(self, tmp_path: Path) -> NodeAttestorAdapter:
        return X509PopAdapter(tmp_path)
