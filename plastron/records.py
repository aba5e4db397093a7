"""The records the server's datastore keeps and its API carries (registration entries,
attested nodes, join tokens, federation relationships): frozen values in core, so the wire
conversions (plastron/wire) and any DataStore implementation share them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from plastron.errors import AlreadyExists
from plastron.selector import Selector
from plastron.spiffe.ids import SpiffeId, TrustDomain

MatchMode = Literal["exact", "subset", "superset", "any"]
DeleteMode = Literal["restrict", "dissociate", "delete"]
FederationProfile = Literal["https_web", "https_spiffe"]


@dataclass(frozen=True, slots=True)
class RegistrationEntry:
    entry_id: str
    spiffe_id: SpiffeId
    parent_id: SpiffeId
    selectors: tuple[Selector, ...]
    x509_svid_ttl: int = 0
    jwt_svid_ttl: int = 0
    federates_with: tuple[TrustDomain, ...] = ()
    admin: bool = False
    downstream: bool = False
    expires_at: int = 0
    dns_names: tuple[str, ...] = ()
    revision_number: int = 0
    store_svid: bool = False
    hint: str = ""
    created_at: int = 0


@dataclass(frozen=True, slots=True)
class AttestedNode:
    """An attested agent. Banned means ``cert_serial == ""`` (SPIRE semantics)."""

    spiffe_id: SpiffeId
    attestation_type: str
    cert_serial: str
    cert_not_after: int
    new_cert_serial: str = ""
    new_cert_not_after: int = 0
    can_reattest: bool = False
    agent_version: str = ""
    node_data: bytes = b""
    selectors: tuple[Selector, ...] = ()

    @property
    def banned(self) -> bool:
        return self.cert_serial == ""


@dataclass(frozen=True, slots=True)
class JoinToken:
    token: str
    expires_at: int
    #: The node alias (SPIFFE ID) whose entry is created when the token is used.
    alias: SpiffeId | None = None

    def __repr__(self) -> str:
        # The token is a bearer secret: keep it out of logs and tracebacks.
        return f"JoinToken(token=<redacted>, expires_at={self.expires_at}, alias={self.alias})"


@dataclass(frozen=True, slots=True)
class CAJournal:
    """The CA's journal blob; ``id == 0`` means "not stored yet"."""

    id: int
    data: bytes
    active_x509_authority_id: str


@dataclass(frozen=True, slots=True)
class FederationRelationship:
    trust_domain: TrustDomain
    bundle_endpoint_url: str
    profile: FederationProfile
    endpoint_spiffe_id: SpiffeId | None = None


class EntryAlreadyExists(AlreadyExists):
    """An entry with the same SPIFFE ID, parent ID and selector set exists; carries it."""

    def __init__(self, message: str, existing: RegistrationEntry | None) -> None:
        super().__init__(message)
        self.existing = existing
