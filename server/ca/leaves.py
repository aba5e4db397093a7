"""X509-SVID leaves: what the CA decides for one (:class:`LeafPlan`), the one function that
builds every leaf the server signs (workload, agent, server, health check), and the workload
batch signer that runs in this process, in a signing thread or in a worker process."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from cryptography import x509

from plastron.errors import InvalidArgument, PlastronError
from plastron.keymanager import PrivateKey, PublicKey
from plastron.spiffe.ids import SpiffeId
from plastron.spiffe.x509svid import make_x509_svid, make_x509_svid_der

#: A leaf's DER, or why it was refused.
LeafDer = bytes | PlastronError
T = TypeVar("T")


@dataclass(frozen=True)
class LeafPlan:
    """One leaf as decided by the CA (identity, expiry capped to the CA's, DNS names, subject),
    waiting for its public key."""

    spiffe_id: SpiffeId
    not_after: dt.datetime
    dns_names: tuple[str, ...] = ()
    subject: x509.Name | None = None  # None: SPIRE's default subject

    def __reduce__(self) -> tuple[Callable[..., LeafPlan], tuple[object, ...]]:
        # Plans cross the pipe to the signing workers by the batch. A frozen dataclass pickles
        # its fields one by one through dataclasses.fields(), the SPIFFE ID as two more; the ID
        # as text is cheaper at both ends, and the worker gets it parsed (checked) afresh.
        return _plan_from_pickle, (
            str(self.spiffe_id),
            self.not_after,
            self.dns_names,
            self.subject,
        )


def _plan_from_pickle(
    spiffe_id: str, not_after: dt.datetime, dns_names: tuple[str, ...], subject: x509.Name | None
) -> LeafPlan:
    return LeafPlan(_parsed_id(spiffe_id), not_after, dns_names, subject)


@functools.lru_cache(maxsize=4096)
def _parsed_id(text: str) -> SpiffeId:
    """SpiffeId.parse, remembered: agents renew the same workloads batch after batch, and a
    SpiffeId is immutable. A text that does not parse raises every time (nothing is cached)."""
    return SpiffeId.parse(text)


def check_workload_path(spiffe_id: SpiffeId, what: str) -> None:
    """Refuse an ID no workload may hold: an empty path, or one in SPIRE's reserved ``/spire``
    namespace. An SVID for ``/spire/server`` passes every agent's check of the server, and one
    for ``/spire/agent/...`` is an agent's identity; the CA signs those only through
    ``ServerCA.sign_server_x509_svid`` and ``ServerCA.sign_agent_x509_svid``, so no API, CLI or
    entry can obtain them as a workload SVID."""
    if not spiffe_id.path:
        raise InvalidArgument(f"{what} ID {spiffe_id} has no path; a workload ID needs one")
    if spiffe_id.is_reserved():
        raise InvalidArgument(
            f"{what} ID {spiffe_id} is in the reserved /spire namespace of the server and its "
            "agents; it is not a workload ID"
        )


def sign_leaf(
    plan: LeafPlan,
    public_key: PublicKey,
    *,
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    not_before: dt.datetime,
) -> x509.Certificate:
    """The leaf of ``plan`` for ``public_key``, signed by ``issuer``'s key."""
    return _signed(
        make_x509_svid,
        plan,
        public_key,
        issuer=issuer,
        issuer_key=issuer_key,
        not_before=not_before,
    )


def _signed(
    make: Callable[..., T],
    plan: LeafPlan,
    public_key: PublicKey,
    *,
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    not_before: dt.datetime,
) -> T:
    """``make`` (the leaf as a certificate, or as DER) called with what ``plan`` says."""
    return make(
        spiffe_id=plan.spiffe_id,
        public_key=public_key,
        issuer=issuer,
        issuer_key=issuer_key,
        not_before=not_before,
        not_after=plan.not_after,
        dns_names=plan.dns_names,
        subject=plan.subject,
    )


def sign_leaves(
    orders: Sequence[tuple[LeafPlan, PublicKey | PlastronError]],
    *,
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    not_before: dt.datetime,
) -> list[LeafDer]:
    """Each workload order's leaf DER, in order; an order whose key was refused keeps its
    refusal, and one the key store cannot sign fails alone. Whoever holds the CA key refuses a
    reserved ID here, however the plan was made (a worker process trusts no caller)."""
    out: list[LeafDer] = []
    for plan, key in orders:
        try:
            check_workload_path(plan.spiffe_id, "X509-SVID")
            if isinstance(key, PlastronError):
                raise key
            leaf = _signed(
                make_x509_svid_der,
                plan,
                key,
                issuer=issuer,
                issuer_key=issuer_key,
                not_before=not_before,
            )
        except PlastronError as exc:
            out.append(exc)
        else:
            out.append(leaf)
    return out
