"""Plugin-level ``tpm`` attestation round trip on swtpm: server half ↔ agent half in-process.

Prints p50/p99 per EK type, the raw TPM limit measured in the same run (the agent's TPM work
alone: read EK + create AK, then activate + quote + PCR read), and the ratio. Usage:
    .venv/bin/python bench/tpm_attest.py [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "swtpm-tests"))

from swtpm_manufacture import make_manufacturer_ca, manufacture, start_copy

from plastron.spiffe.ids import TrustDomain
from plastron.tpm.attestor import (
    TpmAgentAttestor,
    TpmServerAttestor,
    TpmServerConfig,
)
from plastron.tpm.credential import make_credential
from plastron.tpm.structures import parse_tpm2b_public


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def round_trip(server: TpmServerAttestor, agent: TpmAgentAttestor) -> float:
    start = time.perf_counter()
    payload = await agent.payload()
    await server.attest(payload, agent.answer)
    return time.perf_counter() - start


def raw_tpm(agent: TpmAgentAttestor, ek_type: str) -> float:
    start = time.perf_counter()
    dev = agent.device
    ek, ak = dev.enroll(ek_type)
    start_make = time.perf_counter()
    cred = make_credential(
        parse_tpm2b_public(ek.public), parse_tpm2b_public(ak.public).name, b"s" * 32
    )
    start_activate = time.perf_counter()  # MakeCredential is server work: not in the raw figure
    dev.activate_and_quote(
        ek.ek_type, ak, cred.id_object, cred.encrypted_secret, nonce=b"n" * 32, pcrs=[0, 7]
    )
    return time.perf_counter() - start - (start_activate - start_make)


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        ca = make_manufacturer_ca(base / "ca")
        swtpm = start_copy(manufacture(base / "state", ca), base / "run")
        try:
            cfg = TpmServerConfig(endorsement_ca_path=str(ca.dir / "ca-cert.pem"), pcrs=(0, 7))
            server = TpmServerAttestor(cfg, TrustDomain("example.org"))
            print(f"{'EK':<10}{'rounds':>7}{'p50 ms':>9}{'p99 ms':>9}{'raw p50':>9}{'ratio':>7}")
            for ek_type in ("rsa-2048", "ecc-p384"):
                agent = TpmAgentAttestor(swtpm.tcti, ek_type)
                await round_trip(server, agent)  # warm-up
                trips = [await round_trip(server, agent) for _ in range(rounds)]
                raw = [raw_tpm(agent, ek_type) for _ in range(rounds)]
                p50, p99, r50 = pct(trips, 0.5), pct(trips, 0.99), statistics.median(raw) * 1000
                print(f"{ek_type:<10}{rounds:>7}{p50:>9.1f}{p99:>9.1f}{r50:>9.1f}{p50 / r50:>7.2f}")
        finally:
            swtpm.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=50)
    asyncio.run(main(parser.parse_args().rounds))
