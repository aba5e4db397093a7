"""``tpm`` attestation through a real ``plastron-server`` process (TLS, AttestAgent stream, CA
signing, node record written), with swtpm as each agent's TPM.

Prints one table: per EK type, sequential AttestAgent latency p50/p99 and, in the same run, the
plugin-level round trip without the server (bench/tpm_attest.py's figure: both halves
in-process), and the ratio. Then attestations/s for one server (``ratelimit { attestation =
false }``) with C concurrent agents, each on its own swtpm with its own EKs, next to the
plugin-level rate at the same concurrency, and the server process's CPU per attestation. Usage:
    .venv/bin/python bench/tpm_attest_server.py [--rounds N] [--concurrency C] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import Awaitable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "swtpm-tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from attest_harness import TD, Server, attest_once, make_csr, rate
from swtpm_manufacture import (
    ManufacturerCa,
    SwtpmProcess,
    make_manufacturer_ca,
    manufacture,
)
from tpm_attest import pct, round_trip

from plastron.spiffe.ids import TrustDomain
from plastron.tpm.attestor import TpmAgentAttestor, TpmServerAttestor, TpmServerConfig


def tpm_attestor_block(ca: ManufacturerCa) -> str:
    return f"""NodeAttestor "tpm" {{ plugin_data {{
    endorsement_ca_path = "{ca.dir / "ca-cert.pem"}" pcrs = [0, 7] }} }}"""


def via_server(server: Server, agent: TpmAgentAttestor, csr: bytes) -> Awaitable[float]:
    return attest_once(server, "tpm", agent.payload, agent.answer, csr)


async def run(base: Path, rounds: int, concurrency: int, seconds: float) -> None:
    ca = make_manufacturer_ca(base / "ca")
    tpms: list[SwtpmProcess] = []
    (base / "srv").mkdir()
    server = Server(base / "srv", tpm_attestor_block(ca))
    try:
        for i in range(concurrency):
            tpms.append(SwtpmProcess(manufacture(base / f"tpm{i}", ca)))
            tpms[-1].start()
        plugin = TpmServerAttestor(
            TpmServerConfig(endorsement_ca_path=str(ca.dir / "ca-cert.pem"), pcrs=(0, 7)),
            TrustDomain(TD),
        )
        csr = make_csr()
        print(f"{'EK':<10}{'rounds':>7}{'p50 ms':>9}{'p99 ms':>9}{'plugin p50':>12}{'ratio':>7}")
        for ek_type in ("rsa-2048", "ecc-p384"):
            agent = TpmAgentAttestor(tpms[0].tcti, ek_type)
            await via_server(server, agent, csr)  # warm-up
            trips = [await via_server(server, agent, csr) for _ in range(rounds)]
            local = [await round_trip(plugin, agent) for _ in range(rounds)]
            p50, p99, l50 = pct(trips, 0.5), pct(trips, 0.99), pct(local, 0.5)
            print(f"{ek_type:<10}{rounds:>7}{p50:>9.1f}{p99:>9.1f}{l50:>12.1f}{p50 / l50:>7.2f}")
        print(
            f"\n{'EK':<10}{'agents':>7}{'server att/s':>14}{'plugin att/s':>14}{'ratio':>7}"
            f"{'server CPU ms/att':>19}"
        )
        for ek_type in ("rsa-2048", "ecc-p384"):
            agents = [TpmAgentAttestor(t.tcti, ek_type) for t in tpms]
            served = await rate(
                seconds, [partial(via_server, server, a, csr) for a in agents], server
            )
            local = await rate(seconds, [partial(round_trip, plugin, a) for a in agents])
            ratio = served.per_second / local.per_second
            print(
                f"{ek_type:<10}{concurrency:>7}{served.per_second:>14.1f}{local.per_second:>14.1f}"
                f"{ratio:>7.2f}{served.server_ms_per_call:>19.2f}"
            )
        count = server.cli("agent", "count").stdout.strip()
        print(f"\nserver now holds {count} (one node record per EK, re-attested in place)")
    finally:
        for tpm in tpms:
            tpm.kill()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    ns = parser.parse_args()
    os.environ.setdefault("TSS2_LOG", "all+none")
    base = Path(tempfile.mkdtemp(prefix="pl-bench-tpm-", dir="/tmp"))  # short socket paths
    try:
        asyncio.run(run(base, ns.rounds, ns.concurrency, ns.seconds))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
