"""PKCS#11 signing rates on SoftHSM2: bare python-pkcs11, the Plastron HSM key, and in-process.

    .venv/bin/python bench/pkcs11_raw.py [--seconds 1.0] [--runs 5]

Prints one table of medians over ``--runs`` runs of ``--seconds`` each:
- bare C_Sign: python-pkcs11 CKM_ECDSA on a precomputed SHA-256 digest, no lock (the limit);
- plastron sign: ``HsmEllipticCurvePrivateKey.sign`` (hash + process lock + session + DER);
- plastron X.509: ``CertificateBuilder.sign`` with the HSM key (an SVID-sized certificate);
- in-process: the same two operations with a ``cryptography`` P-256 key.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "softhsm-conf"))

import pkcs11
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, Mechanism, ObjectClass
from softhsm_token import init_token

from plastron.hsm.keymanager import create_pkcs11_key_manager
from plastron.hsm.session import PKCS11_LOCK
from plastron.keymanager import KeyType, PrivateKey
from plastron.spiffe.ids import TrustDomain

NAME = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE")])
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
MESSAGE = b"x" * 300
ECDSA = ec.ECDSA(hashes.SHA256())


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds``."""
    count = 0
    began = time.perf_counter()
    deadline = began + seconds
    while True:
        for _ in range(20):
            fn()
        count += 20
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - began)


def cert_signer(key: PrivateKey) -> Callable[[], object]:
    leaf = ec.generate_private_key(ec.SECP256R1()).public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(NAME)
        .issuer_name(NAME)
        .public_key(leaf)
        .serial_number(1)
        .not_valid_before(START)
        .not_valid_after(START + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://td/w")]),
            critical=False,
        )
    )
    return lambda: builder.sign(key, hashes.SHA256())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="plastron-bench-") as tmp:
        token = init_token(Path(tmp), "bench")
        km = create_pkcs11_key_manager(
            token.plugin_data(), trust_domain=TrustDomain("bench.example"), server_id="bench"
        )
        try:
            km.generate_key("x509-CA-A", KeyType.EC_P256)
            hsm_key = km.signer("x509-CA-A")
            assert isinstance(hsm_key, ec.EllipticCurvePrivateKey)
            label = km.label_for("x509-CA-A")
            digest = hashlib.sha256(MESSAGE).digest()

            # bare python-pkcs11 on its own session (inherits the manager's login)
            with PKCS11_LOCK:
                lib = pkcs11.lib(token.module_path)
                session = lib.get_token(token_label=token.token_label).open()
                raw_key: Any = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
                assert raw_key[Attribute.SIGN]
            MECH = Mechanism.ECDSA
            soft = ec.generate_private_key(ec.SECP256R1())
            cases: list[tuple[str, Callable[[], object]]] = [
                ("bare C_Sign ECDSA P-256", lambda: raw_key.sign(digest, mechanism=MECH)),
                ("plastron HSM key sign()", lambda: hsm_key.sign(MESSAGE, ECDSA)),
                ("plastron HSM X.509 issue", cert_signer(hsm_key)),
                ("in-process sign()", lambda: soft.sign(MESSAGE, ECDSA)),
                ("in-process X.509 issue", cert_signer(soft)),
            ]  # fmt: skip
            results: dict[str, float] = {}
            for name, fn in cases:
                fn()  # warm up
                results[name] = statistics.median(rate(fn, args.seconds) for _ in range(args.runs))
            with PKCS11_LOCK:
                session.close()
        finally:
            km.close()

    bare = results["bare C_Sign ECDSA P-256"]
    soft_sign = results["in-process sign()"]
    print(f"{'case':<28} {'ops/s (median)':>15} {'vs bare C_Sign':>15} {'vs in-process':>14}")
    for name, value in results.items():
        print(f"{name:<28} {value:>15,.0f} {value / bare:>15.2f} {value / soft_sign:>14.2f}")
    print(f"(runs={args.runs}, {args.seconds:.1f} s each, SoftHSM2 {token.module_path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
