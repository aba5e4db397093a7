"""mTLS handshakes signed by a TPM-resident agent key (KeyManager ``tpm``) on swtpm.

Full TLS 1.3 handshakes from this process (Python ssl) to an ``openssl s_server`` that requires
a client certificate: first with a software EC P-256 key (the raw limit, measured before the
tpm2-openssl provider is loaded, since loading it changes the process's OpenSSL), then with an EC
P-256 key created in the TPM and signed there through tpm2-abrmd. Prints p50/p99 and
handshakes/s for both and the ratio. Usage:
    .venv/bin/python bench/tpm_tls_handshake.py [--rounds N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "swtpm-tests"))

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from swtpm_manufacture import SwtpmProcess, make_manufacturer_ca, manufacture
from tpm_resource_manager import AbrmdProcess

from plastron.keymanager import KeyType, PrivateKey, PublicKey
from plastron.tpm.keymanager import TpmKeyManager
from plastron.transport.tls import client_ssl_context

PEM = serialization.Encoding.PEM


def cert(name: str, public: PublicKey, issuer_key: PrivateKey, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    return (
        x509.CertificateBuilder()
        .subject_name(issuer if ca else subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def handshakes(ctx: ssl.SSLContext, port: int, rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost"),
        ):
            samples.append(time.perf_counter() - started)
    return samples


def report(label: str, samples: list[float]) -> float:
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2] * 1000
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000
    rate = len(samples) / sum(samples)
    print(f"{label:<34} {p50:8.2f} {p99:8.2f} {rate:10,.0f}")
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pt-tls-", dir="/tmp") as tmp:
        base = Path(tmp)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = cert("bench CA", ca_key.public_key(), ca_key, ca=True)
        server_key = ec.generate_private_key(ec.SECP256R1())
        (base / "ca.pem").write_bytes(ca_cert.public_bytes(PEM))
        (base / "server.pem").write_bytes(
            cert("localhost", server_key.public_key(), ca_key, ca=False).public_bytes(PEM)
        )
        (base / "server.key").write_bytes(
            server_key.private_bytes(
                PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        port = free_port()
        server = subprocess.Popen(
            ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", base / "server.pem",
             "-key", base / "server.key", "-Verify", "1", "-CAfile", base / "ca.pem",
             "-tls1_3", "-www", "-quiet", "-naccept", str(4 * args.rounds + 10)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        tpm = SwtpmProcess(manufacture(base / "state", make_manufacturer_ca(base / "mca")))
        tpm.start()
        rm = AbrmdProcess(tpm.tcti, base / "abrmd")
        try:
            rm.start()
            os.environ.update(rm.env)
            deadline = time.monotonic() + 10
            while True:  # s_server is listening once a connection succeeds
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
            soft_key = ec.generate_private_key(ec.SECP256R1())
            soft_ctx = client_ssl_context(
                trust_bundle=[ca_cert],
                client_chain=[cert("agent", soft_key.public_key(), ca_key, ca=False)],
                client_key=soft_key,
            )
            soft = handshakes(soft_ctx, port, args.rounds)
            keys = TpmKeyManager(base / "agent-keys", rm.tcti)
            public = keys.generate_key("agent-svid-A", KeyType.EC_P256)
            tpm_ctx = client_ssl_context(  # loads tpm2-openssl into this process
                trust_bundle=[ca_cert],
                client_chain=[cert("agent", public, ca_key, ca=False)],
                client_key=keys.signer("agent-svid-A"),
            )
            handshakes(tpm_ctx, port, 3)  # warm-up: the provider loads the key once
            in_tpm = handshakes(tpm_ctx, port, args.rounds)
        finally:
            server.terminate()
            server.wait(timeout=10)
            rm.stop()
            tpm.stop()
    print(f"{'client key':<34} {'p50 ms':>8} {'p99 ms':>8} {'per s':>10}")
    soft_rate = report("software EC P-256 (raw limit)", soft)
    tpm_rate = report("TPM EC P-256 (swtpm, tpm2-abrmd)", in_tpm)
    print(
        f"ratio TPM / software: {tpm_rate / soft_rate:.3f}; {args.rounds} full TLS 1.3 "
        "handshakes each, client certificate required, server openssl s_server on loopback"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
