"""CA journal serialisation: round trip, and rejection of corrupt or oversized rows."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from plastron.errors import DataStoreError
from plastron.server.ca.journal import (
    MAX_JOURNAL_BYTES,
    MAX_RECORDS,
    AuthorityStatus,
    Journal,
    JwtKeyRecord,
    X509CARecord,
)

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def _x509(n: int, status: AuthorityStatus = AuthorityStatus.OLD) -> X509CARecord:
    return X509CARecord(
        slot_id="AB"[n % 2],
        authority_id=f"{n:040x}",
        issued_at=T0 + dt.timedelta(hours=n),
        not_after=T0 + dt.timedelta(hours=n + 24),
        status=status,
        chain_der=(b"\x30\x03\x02\x01" + bytes([n % 256]),),
        upstream_authority_id="ab" * 20 if n % 3 == 0 else "",
    )


def _jwt(n: int, status: AuthorityStatus = AuthorityStatus.OLD) -> JwtKeyRecord:
    return JwtKeyRecord(
        slot_id="AB"[n % 2],
        authority_id=f"kid{n}",
        issued_at=T0 + dt.timedelta(hours=n),
        not_after=T0 + dt.timedelta(hours=n + 24),
        status=status,
        public_key_der=bytes([n % 256]) * 65,
    )


def test_round_trip_keeps_every_field() -> None:
    journal = (
        Journal()
        .with_x509_ca(_x509(1))
        .with_x509_ca(_x509(2, AuthorityStatus.ACTIVE))
        .with_x509_ca(_x509(3, AuthorityStatus.PREPARED))
        .with_jwt_key(_jwt(1))
        .with_jwt_key(_jwt(2, AuthorityStatus.ACTIVE))
    )
    again = Journal.from_json(journal.to_json())
    assert again == journal
    assert again.active_x509_authority_id() == _x509(2).authority_id


def test_same_authority_is_replaced_not_duplicated() -> None:
    journal = Journal().with_x509_ca(_x509(1, AuthorityStatus.PREPARED))
    journal = journal.with_x509_ca(_x509(1, AuthorityStatus.ACTIVE))
    assert len(journal.x509_cas) == 1
    assert journal.x509_cas[0].status is AuthorityStatus.ACTIVE


def test_only_the_newest_records_are_kept() -> None:
    journal = Journal()
    for n in range(MAX_RECORDS + 5):
        journal = journal.with_x509_ca(_x509(n)).with_jwt_key(_jwt(n))
    assert len(journal.x509_cas) == MAX_RECORDS
    assert journal.x509_cas[-1] == _x509(MAX_RECORDS + 4)
    assert len(journal.jwt_keys) == MAX_RECORDS


def test_no_active_authority_gives_empty_id() -> None:
    assert (
        Journal().with_x509_ca(_x509(1, AuthorityStatus.PREPARED)).active_x509_authority_id() == ""
    )


def _doc(journal: Journal) -> dict[str, object]:
    doc = json.loads(journal.to_json())
    assert isinstance(doc, dict)
    return doc


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(version=99), "version"),
        (lambda d: d["x509_cas"][0].update(slot_id="C"), "slot id"),
        (lambda d: d["x509_cas"][0].update(status="retired"), "retired"),
        (lambda d: d["x509_cas"][0].update(issued_at="yesterday"), "timestamp"),
        (lambda d: d["x509_cas"][0].update(chain=[]), "chain"),
        (lambda d: d["x509_cas"][0].update(chain=["not base64!"]), "base64"),
        (lambda d: d["jwt_keys"][0].pop("public_key"), "public_key"),
        (lambda d: d.update(x509_cas=[d["x509_cas"][0]] * (MAX_RECORDS + 1)), "at most"),
    ],
)
def test_corrupt_journal_is_rejected(mutate: object, message: str) -> None:
    doc = _doc(Journal().with_x509_ca(_x509(1)).with_jwt_key(_jwt(1)))
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(DataStoreError, match=message):
        Journal.from_json(json.dumps(doc).encode())


def test_oversized_journal_is_rejected() -> None:
    with pytest.raises(DataStoreError, match="limit"):
        Journal.from_json(b" " * (MAX_JOURNAL_BYTES + 1))


def test_non_json_is_rejected() -> None:
    with pytest.raises(DataStoreError, match="cannot be parsed"):
        Journal.from_json(b"\xff\x00")
