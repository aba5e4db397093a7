"""tpm runs the NodeAttestor conformance suite (tests/conformance/nodeattestor.py).

A private swtpm (EK certificates from the test manufacturer CA) is the node; good attempts come
from the real agent half. Bad credentials replace the payload's EK certificate with one for the
same EK key that is expired, not yet valid, or issued by another CA, or swap the EK and AK
public areas.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from attest_harness import PayloadEdit, reissued_ek_cert, swap
from swtpm_fixtures import ManufacturerCa, SwtpmProcess, make_manufacturer_ca

from plastron.tpm.attestor import TpmAgentAttestor
from tests.conformance.nodeattestor import NodeAttestorAdapter, NodeAttestorConformance
from tests.conformance.nodeattestor_env import Attempt, AttestEnv

pytestmark = pytest.mark.swtpm
DAY = dt.timedelta(days=1)


class TpmAdapter(NodeAttestorAdapter):
    kind = "tpm"
    message_prefixes = ("tpm: ",)
    not_applicable = {
        "hostile_agent_path": "the agent ID path is the SHA-256 hex of the EK public key, "
        "computed by the server; no attested text reaches it",
    }

    def __init__(self, tpm: SwtpmProcess, ca: ManufacturerCa, directory: Path) -> None:
        self.tcti, self.ca, self.dir = tpm.tcti, ca, directory

    def server_plugins(self, case: str) -> str:
        ca_path = self.ca.dir / "ca-cert.pem"
        return f'NodeAttestor "tpm" {{ plugin_data {{ endorsement_ca_path = "{ca_path}" }} }}'

    async def good(self, env: AttestEnv) -> Attempt:
        agent = TpmAgentAttestor(self.tcti)
        return Attempt(await agent.payload(), agent.answer, "swtpm EK, fresh AK")

    async def _edited(self, label: str, edit: PayloadEdit) -> Attempt:
        agent = TpmAgentAttestor(self.tcti)
        obj = json.loads(await agent.payload())
        edit(obj)
        return Attempt(json.dumps(obj).encode(), agent.answer, label)

    async def wrong_key_type(self, env: AttestEnv) -> list[Attempt]:
        return [
            await self._edited("the AK (a signing key) sent as the EK", swap("ek_pub", "ak_pub")),
            await self._edited(
                "the EK (a decryption key) sent as the AK", swap("ak_pub", "ek_pub")
            ),
        ]

    async def expired(self, env: AttestEnv) -> list[Attempt]:
        now = dt.datetime.now(dt.UTC)
        edit = reissued_ek_cert("ek_cert", self.ca, not_before=now - 30 * DAY, not_after=now - DAY)
        return [await self._edited("EK certificate expired yesterday", edit)]

    async def not_yet_valid(self, env: AttestEnv) -> list[Attempt]:
        now = dt.datetime.now(dt.UTC)
        edit = reissued_ek_cert("ek_cert", self.ca, not_before=now + DAY, not_after=now + 30 * DAY)
        return [await self._edited("EK certificate valid from tomorrow", edit)]

    async def untrusted_ca(self, env: AttestEnv) -> list[Attempt]:
        other = make_manufacturer_ca(self.dir / "other-ca", cn="Other TPM Vendor")

        def drop_cert(obj: dict[str, Any]) -> None:
            del obj["ek_cert"]

        return [
            await self._edited(
                "EK certificate from another CA", reissued_ek_cert("ek_cert", other)
            ),
            await self._edited("no EK certificate, EK not allow-listed", drop_cert),
        ]


class TestTpmConformance(NodeAttestorConformance):
    @pytest.fixture
    def adapter(
        self, swtpm: SwtpmProcess, manufacturer_ca: ManufacturerCa, tmp_path: Path
    ) -> NodeAttestorAdapter:
        return TpmAdapter(swtpm, manufacturer_ca, tmp_path)
