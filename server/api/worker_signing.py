"""Workload leaves signed in a worker process, by a KeyManager that process opened itself.

With an HSM every SVID costs a CSR check and a token signature, about 350 µs of CPU together,
and the event loop could not overlap them with its own RPC work (the signing thread must win
the GIL back from the loop after each PKCS#11 call). A worker process that logged in to the
same token with its own session does both with no GIL to share. Only the CA certificate, key
id, CSRs and the CA's decisions (SPIFFE ID, validity, DNS names) go in; leaf DER or an error
comes out. The key never travels: the worker reaches it through the token, like the server.

Before the first leaf under a new CA certificate, the worker looks the key up afresh and
refuses it unless its public half is the certificate's, so a slot the server regenerated is
never used through a stale handle.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from plastron import errors
from plastron.errors import KeyManagerError, KeyManagerUnavailable, PlastronError
from plastron.keymanager import (
    ForgettingKeyManager,
    KeyManager,
    KeyManagerOpener,
    PrivateKey,
    close_if_closeable,
)
from plastron.server.api.csr import csr_public_key, parse_csr
from plastron.server.ca.server_ca import check_workload_path
from plastron.spiffe.ids import SpiffeId
from plastron.spiffe.x509svid import make_x509_svid

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

#: (error class name, message): a PlastronError as it crosses the pipe.
ErrorReport = tuple[str, str]


@dataclass(frozen=True)
class LeafOrder:
    """One leaf: the agent's CSR and what the CA decided for it."""

    csr: bytes
    field: str  # e.g. "params[3].csr", for error messages
    spiffe_id: SpiffeId
    not_after: dt.datetime
    dns_names: tuple[str, ...]


@dataclass(frozen=True)
class SignTask:
    issuer: bytes  # the signing CA's certificate, DER
    key_id: str
    not_before: dt.datetime
    orders: tuple[LeafOrder, ...]


#: Per order, leaf DER or its error; or one report when the task could not start at all.
SignAnswer = list[bytes | ErrorReport] | ErrorReport


def report(exc: PlastronError) -> ErrorReport:
    return type(exc).__name__, str(exc)


def from_report(error: ErrorReport) -> PlastronError:
    """The error a worker reported, as the same class where it is one of ours."""
    name, message = error
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, PlastronError):
        return cls(message)
    return KeyManagerError(message)


#: After a failed open the worker waits this long before it tries again, doubling up to
#: ``REOPEN_MAX``: a wrong PIN retried on every batch would lock the token's user PIN.
REOPEN_FIRST = 5.0
REOPEN_MAX = 300.0


class WorkerSigner:
    """A worker process's signing state: its KeyManager (opened on first use, and again, with
    backoff, after a failed open) and the signer for the current CA certificate."""

    def __init__(self, opener: KeyManagerOpener, clock: Callable[[], float] = time.monotonic):
        self._opener = opener
        self._clock = clock
        self._manager: KeyManager | None = None
        self._current: tuple[bytes, str, x509.Certificate, PrivateKey] | None = None
        self._retry_at = 0.0
        self._backoff = REOPEN_FIRST
        self._open_error = ""

    def _open(self) -> KeyManager:
        if self._manager is not None:
            return self._manager
        now = self._clock()
        if now < self._retry_at:  # the same words as the failure, so the server says it once
            raise KeyManagerUnavailable(self._open_error)
        try:
            self._manager = self._opener()
        except PlastronError as exc:
            self._open_error = (
                f"signing worker cannot open the key store: {exc} (next try in"
                f" {self._backoff:.0f} s)"
            )
            self._retry_at = now + self._backoff
            self._backoff = min(2 * self._backoff, REOPEN_MAX)
            raise KeyManagerUnavailable(self._open_error) from exc
        self._backoff = REOPEN_FIRST
        return self._manager

    def _signer_for(self, issuer_der: bytes, key_id: str) -> tuple[x509.Certificate, PrivateKey]:
        current = self._current
        if current is not None and current[0] == issuer_der and current[1] == key_id:
            return current[2], current[3]
        manager = self._open()
        issuer = x509.load_der_x509_certificate(issuer_der)
        if isinstance(manager, ForgettingKeyManager):
            manager.forget(key_id)  # a new CA certificate: the server may have regenerated it
        signer = manager.signer(key_id)
        if signer.public_key().public_bytes(*_SPKI) != issuer.public_key().public_bytes(*_SPKI):
            raise KeyManagerError(
                f"key {key_id!r} in the key store does not match the CA certificate "
                f"(serial {issuer.serial_number:x}); refusing to sign with it"
            )
        self._current = (issuer_der, key_id, issuer, signer)
        return issuer, signer

    def run(self, task: SignTask) -> SignAnswer:
        try:
            issuer, signer = self._signer_for(task.issuer, task.key_id)
        except PlastronError as exc:
            self._current = None
            return report(exc)
        out: list[bytes | ErrorReport] = []
        for order in task.orders:
            try:
                # The worker holds the CA key: it too refuses a reserved ID (server, agents).
                check_workload_path(order.spiffe_id, "X509-SVID")
                public_key = csr_public_key(parse_csr(order.csr, order.field), order.field)
                leaf = make_x509_svid(
                    spiffe_id=order.spiffe_id,
                    public_key=public_key,
                    issuer=issuer,
                    issuer_key=signer,
                    not_before=task.not_before,
                    not_after=order.not_after,
                    dns_names=order.dns_names,
                )
                out.append(leaf.public_bytes(serialization.Encoding.DER))
            except PlastronError as exc:  # as in ServerCA.sign_planned: the item fails alone
                out.append(report(exc))
        return out

    def close(self) -> None:
        close_if_closeable(self._manager)
