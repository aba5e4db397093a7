"""The CA journal: what each X.509 CA and JWT signing key slot held, persisted as JSON.

The journal lets a restarted server pick up exactly where it left off: it is stored in the
datastore's CA-journal table under the authority id of the active X.509 CA, and found again
through the public keys the KeyManager still holds. Records carry public material only
(CA certificate chain, JWT public key); private keys never leave the KeyManager.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import json
from dataclasses import dataclass, replace
from typing import Any

from plastron.errors import DataStoreError

# Bounds against a corrupt or hostile row: a journal is a few KiB in practice.
MAX_JOURNAL_BYTES = 1 << 20
MAX_RECORDS = 20  # per kind, newest kept, like SPIRE's journal cap
SLOT_IDS = ("A", "B")
_VERSION = 1


class AuthorityStatus(enum.Enum):
    PREPARED = "prepared"
    ACTIVE = "active"
    OLD = "old"


@dataclass(frozen=True)
class X509CARecord:
    """One X.509 CA: the CA cert first, then upstream intermediates (never the root)."""

    slot_id: str
    authority_id: str  # lowercase hex SKID of the CA certificate
    issued_at: dt.datetime
    not_after: dt.datetime
    status: AuthorityStatus
    chain_der: tuple[bytes, ...]
    upstream_authority_id: str = ""  # hex SKID of the upstream issuer, "" when self-signed


@dataclass(frozen=True)
class JwtKeyRecord:
    """One JWT signing key: its kid and SubjectPublicKeyInfo DER."""

    slot_id: str
    authority_id: str  # the JWT kid
    issued_at: dt.datetime
    not_after: dt.datetime
    status: AuthorityStatus
    public_key_der: bytes


@dataclass(frozen=True)
class Journal:
    x509_cas: tuple[X509CARecord, ...] = ()
    jwt_keys: tuple[JwtKeyRecord, ...] = ()

    def with_x509_ca(self, record: X509CARecord) -> Journal:
        """Insert or replace (by authority id) a record, keeping the newest MAX_RECORDS."""
        rest = [r for r in self.x509_cas if r.authority_id != record.authority_id]
        return replace(self, x509_cas=tuple([*rest, record][-MAX_RECORDS:]))

    def with_jwt_key(self, record: JwtKeyRecord) -> Journal:
        rest = [r for r in self.jwt_keys if r.authority_id != record.authority_id]
        return replace(self, jwt_keys=tuple([*rest, record][-MAX_RECORDS:]))

    def without_authority(self, authority_id: str) -> Journal:
        """Drop the records of a revoked authority (its key is destroyed: nothing to resume)."""
        return replace(
            self,
            x509_cas=tuple(r for r in self.x509_cas if r.authority_id != authority_id),
            jwt_keys=tuple(r for r in self.jwt_keys if r.authority_id != authority_id),
        )

    def active_x509_authority_id(self) -> str:
        """The authority id the journal is filed under ("" before the first activation)."""
        for record in reversed(self.x509_cas):
            if record.status is AuthorityStatus.ACTIVE:
                return record.authority_id
        return ""

    def to_json(self) -> bytes:
        doc = {
            "version": _VERSION,
            "x509_cas": [_x509_to_dict(r) for r in self.x509_cas],
            "jwt_keys": [_jwt_to_dict(r) for r in self.jwt_keys],
        }
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Journal:
        if len(data) > MAX_JOURNAL_BYTES:
            raise DataStoreError(f"CA journal is {len(data)} bytes; limit is {MAX_JOURNAL_BYTES}")
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.get("version") != _VERSION:
                raise ValueError(f"unsupported journal version {doc.get('version')!r}")
            x509 = [_x509_from_dict(d) for d in _bounded_list(doc, "x509_cas")]
            jwt = [_jwt_from_dict(d) for d in _bounded_list(doc, "jwt_keys")]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataStoreError(f"CA journal cannot be parsed: {exc}") from exc
        return cls(x509_cas=tuple(x509), jwt_keys=tuple(jwt))


def all_expired_before(data: bytes, cutoff: dt.datetime) -> bool:
    """True when the stored journal ``data`` records authorities and every one of them expired
    before ``cutoff``: nothing in it can be resumed or is still trusted. A journal that cannot
    be read is kept (the CA reports it when it loads it)."""
    try:
        journal = Journal.from_json(data)
    except DataStoreError:
        return False
    records: list[X509CARecord | JwtKeyRecord] = [*journal.x509_cas, *journal.jwt_keys]
    return bool(records) and all(r.not_after < cutoff for r in records)


def _bounded_list(doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = doc[key]
    if not isinstance(items, list) or len(items) > MAX_RECORDS:
        raise ValueError(f"{key} must be a list of at most {MAX_RECORDS} records")
    for item in items:
        if not isinstance(item, dict):
            raise ValueError(f"{key} holds a non-object record")
    return items


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError("expected a base64 string")
    return base64.b64decode(text, validate=True)


def _ts(when: dt.datetime) -> int:
    return int(when.timestamp())


def _from_ts(value: object) -> dt.datetime:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"timestamp must be an integer, got {value!r}")
    return dt.datetime.fromtimestamp(value, tz=dt.UTC)


def _slot(value: object) -> str:
    if value not in SLOT_IDS:
        raise ValueError(f"slot id must be one of {SLOT_IDS}, got {value!r}")
    assert isinstance(value, str)
    return value


def _text(value: object, name: str, limit: int = 256) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(f"{name} must be a string of at most {limit} characters")
    return value


def _slot_fields_to_dict(r: X509CARecord | JwtKeyRecord) -> dict[str, Any]:
    """What every slot record holds, in the order the journal has always written it."""
    return {
        "slot_id": r.slot_id,
        "authority_id": r.authority_id,
        "issued_at": _ts(r.issued_at),
        "not_after": _ts(r.not_after),
        "status": r.status.value,
    }


def _slot_fields_from_dict(d: dict[str, Any]) -> dict[str, Any]:
    return {
        "slot_id": _slot(d["slot_id"]),
        "authority_id": _text(d["authority_id"], "authority_id"),
        "issued_at": _from_ts(d["issued_at"]),
        "not_after": _from_ts(d["not_after"]),
        "status": AuthorityStatus(d["status"]),
    }


def _x509_to_dict(r: X509CARecord) -> dict[str, Any]:
    return {
        **_slot_fields_to_dict(r),
        "chain": [_b64(der) for der in r.chain_der],
        "upstream_authority_id": r.upstream_authority_id,
    }


def _x509_from_dict(d: dict[str, Any]) -> X509CARecord:
    chain = d["chain"]
    if not isinstance(chain, list) or not 1 <= len(chain) <= 16:
        raise ValueError("chain must list 1 to 16 certificates")
    return X509CARecord(
        **_slot_fields_from_dict(d),
        chain_der=tuple(_unb64(c) for c in chain),
        upstream_authority_id=_text(d.get("upstream_authority_id", ""), "upstream_authority_id"),
    )


def _jwt_to_dict(r: JwtKeyRecord) -> dict[str, Any]:
    return {**_slot_fields_to_dict(r), "public_key": _b64(r.public_key_der)}


def _jwt_from_dict(d: dict[str, Any]) -> JwtKeyRecord:
    return JwtKeyRecord(**_slot_fields_from_dict(d), public_key_der=_unb64(d["public_key"]))
