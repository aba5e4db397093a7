"""The raw limits ``bench/issuance.py`` sets its modes beside, measured in the same run.

Each is measured as a rate (wall clock, one process, one thread) and as CPU time per operation:
on a machine shared with other work the rate follows the load, while the CPU per operation
barely moves, so the CPU figures say what the server could do with the cores to itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import statistics
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import pkcs11
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import Mechanism, ObjectClass
from pkcs11_raw import MESSAGE, cert_signer, rate
from softhsm_token import SoftHsmToken

from plastron.hsm.keymanager import create_pkcs11_key_manager
from plastron.hsm.session import PKCS11_LOCK
from plastron.keymanager import KeyType
from plastron.server.ca.csr import csr_public_key, parse_csr
from plastron.spiffe.ids import SpiffeId, TrustDomain
from plastron.spiffe.x509svid import make_ca_certificate, make_x509_svid

TD = TrustDomain("example.org")


class Limit(NamedTuple):
    """One operation alone: the median rate over the runs, and its CPU µs per call."""

    rate: float
    cpu_us: float


class BareRates(NamedTuple):
    c_sign: Limit  # python-pkcs11 C_Sign, ECDSA P-256
    builder: Limit  # CertificateBuilder.sign with the HSM key (SAN only)
    svid: Limit  # make_x509_svid with the HSM key: the exact certificate the server issues
    csr_check: Limit  # load + verify one workload CSR (every BatchNewX509SVID item does this)
    memory_builder: Limit  # CertificateBuilder.sign with an in-process P-256 key


def csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def measure(fn: Callable[[], object], seconds: float, runs: int) -> Limit:
    rates, calls, cpu = [], 0.0, 0.0
    for _ in range(runs):
        began, cpu_began = time.perf_counter(), time.process_time()
        calls_per_s = rate(fn, seconds)
        elapsed = time.perf_counter() - began
        rates.append(calls_per_s)
        calls += calls_per_s * elapsed
        cpu += time.process_time() - cpu_began
    return Limit(statistics.median(rates), 1e6 * cpu / calls)


def svid_signer(hsm_key: ec.EllipticCurvePrivateKey) -> Callable[[], object]:
    now = dt.datetime.now(dt.UTC)
    ca = make_ca_certificate(
        trust_domain=TD,
        public_key=hsm_key.public_key(),
        issuer=None,
        issuer_key=hsm_key,
        not_before=now,
        not_after=now + dt.timedelta(days=1),
    )
    leaf = ec.generate_private_key(ec.SECP256R1()).public_key()
    sid = SpiffeId.parse("spiffe://example.org/w/0")
    end = now + dt.timedelta(hours=1)
    return lambda: make_x509_svid(
        spiffe_id=sid, public_key=leaf, issuer=ca, issuer_key=hsm_key, not_before=now, not_after=end
    )


def csr_checker() -> Callable[[], object]:
    der = csr(ec.generate_private_key(ec.SECP256R1()))
    return lambda: csr_public_key(parse_csr(der))


def bare_rates(token: SoftHsmToken, seconds: float, runs: int) -> BareRates:
    km = create_pkcs11_key_manager(token.plugin_data(), trust_domain=TD, server_id="bare")
    try:
        km.generate_key("x509-CA-A", KeyType.EC_P256)
        hsm_key = km.signer("x509-CA-A")
        label = km.label_for("x509-CA-A")
        digest = hashlib.sha256(MESSAGE).digest()
        with PKCS11_LOCK:
            session = pkcs11.lib(token.module_path).get_token(token_label=token.token_label).open()
            raw: Any = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        c_sign = measure(lambda: raw.sign(digest, mechanism=Mechanism.ECDSA), seconds, runs)
        assert isinstance(hsm_key, ec.EllipticCurvePrivateKey)
        memory_key = ec.generate_private_key(ec.SECP256R1())
        limits = [
            measure(fn, seconds, runs)
            for fn in (
                cert_signer(hsm_key),
                svid_signer(hsm_key),
                csr_checker(),
                cert_signer(memory_key),
            )
        ]
        with PKCS11_LOCK:
            session.close()
        return BareRates(c_sign, *limits)
    finally:
        km.close()
