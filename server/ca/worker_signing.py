"""What a CA worker process does (server/ca/worker_pool.py runs it): check CSRs and, when it
can reach the CA key itself, sign workload leaves.

Each batch item's proof-of-possession signature must be verified (SPIRE does too), and an ECDSA
P-256 verify costs about as much as signing the SVID; a :class:`CheckTask` does that on another
core and sends back only public data (SubjectPublicKeyInfo DER or an error message).

With an HSM every SVID costs a CSR check and a token signature, about 350 µs of CPU together,
and the event loop could not overlap them with its own RPC work (the signing thread must win
the GIL back from the loop after each PKCS#11 call). A worker process that logged in to the
same token with its own session does both with no GIL to share (a :class:`SignTask`). Only the
CA certificate, key id, CSRs and the CA's decisions (:class:`LeafPlan`) go in; leaf DER or an
error comes out. The key never travels: the worker reaches it through the token, like the
server.

Before the first leaf under a new CA certificate, the worker looks the key up afresh and
refuses it unless its public half is the certificate's, so a slot the server regenerated is
never used through a stale handle.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from cryptography import x509

from plastron import errors
from plastron.errors import (
    InvalidArgument,
    KeyManagerError,
    KeyManagerUnavailable,
    PlastronError,
    Unavailable,
)
from plastron.keymanager import (
    ForgettingKeyManager,
    KeyManager,
    KeyManagerOpener,
    PrivateKey,
    close_if_closeable,
)
from plastron.server.ca.csr import CheckedKey, CsrItem, check_csrs, check_public_key
from plastron.server.ca.leaves import LeafDer, LeafPlan, sign_leaves
from plastron.wire.keys import public_key_from_der, spki_der

#: (error class name, message): a PlastronError as it crosses the pipe.
ErrorReport = tuple[str, str]


# The tasks are NamedTuples rather than frozen dataclasses: they cross the pipe for every chunk
# of every batch, and a frozen dataclass pickles through dataclasses.fields() field by field.


class CheckTask(NamedTuple):
    """CSRs to check; the answer is, per CSR, its key's SPKI DER or the refusal's message."""

    items: tuple[CsrItem, ...]


class LeafOrder(NamedTuple):
    """One leaf: the agent's CSR (and its field name for error messages) and what the CA
    decided for it."""

    csr: bytes
    field: str
    plan: LeafPlan


class SignTask(NamedTuple):
    """Leaves to check and sign; the answer is a :data:`SignAnswer`."""

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


def checked_from_worker(
    answers: Sequence[bytes | str], items: Sequence[CsrItem]
) -> list[CheckedKey]:
    """A :class:`CheckTask`'s answers as keys, each re-checked: this process decides what it
    certifies."""
    out: list[CheckedKey] = []
    for answer, (_, field) in zip(answers, items, strict=True):
        if isinstance(answer, str):
            out.append(InvalidArgument(answer))
        else:
            out.append(check_public_key(public_key_from_der(answer, field), field))
    return out


def signed_from_worker(answer: SignAnswer, orders: int) -> list[LeafDer] | PlastronError:
    """A :class:`SignTask`'s answer as leaves, or the one error that stopped the whole task."""
    if isinstance(answer, tuple):
        return from_report(answer)
    if len(answer) != orders:
        return KeyManagerError(f"{len(answer)} answers for {orders} orders")
    return [a if isinstance(a, bytes) else from_report(a) for a in answer]


class WorkerTasks:
    """A worker process's task handler (see server/ca/worker_pool.py): it checks CSRs, and
    signs leaves too when it was given a way to open the CA's key store."""

    def __init__(self, opener: KeyManagerOpener | None = None) -> None:
        self._signer = WorkerSigner(opener) if opener is not None else None

    def __call__(self, task: CheckTask | SignTask) -> list[bytes | str] | SignAnswer:
        if isinstance(task, CheckTask):
            return [
                spki_der(key) if not isinstance(key, PlastronError) else str(key)
                for key in check_csrs(task.items)
            ]
        if self._signer is None:
            return report(Unavailable("this worker was started without a key store"))
        try:
            return self._signer.run(task)
        except Exception as exc:  # a module's surprise: the server signs this task itself
            return "KeyManagerError", f"signing worker: {type(exc).__name__}: {exc}"

    def close(self) -> None:
        if self._signer is not None:
            self._signer.close()


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
        if spki_der(signer.public_key()) != spki_der(issuer.public_key()):
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
        keys = check_csrs([(order.csr, order.field) for order in task.orders])
        leaves = sign_leaves(
            [(order.plan, key) for order, key in zip(task.orders, keys, strict=True)],
            issuer=issuer,
            issuer_key=signer,
            not_before=task.not_before,
        )
        return [leaf if isinstance(leaf, bytes) else report(leaf) for leaf in leaves]

    def close(self) -> None:
        close_if_closeable(self._manager)
