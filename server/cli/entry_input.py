"""Turning ``entry`` flags and ``-data`` JSON into ``spire.api.types.Entry`` messages.

Everything is parsed locally first (SPIFFE IDs strictly, selectors as ``type:value``) so an
obviously bad request never reaches the server; the server still applies its own rules
(trust domain membership, reserved ``/spire/`` paths, ...).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from typing import Any

from plastron.errors import PlastronError
from plastron.proto.spire.api.types import entry_pb2, selector_pb2, spiffeid_pb2
from plastron.selector import Selector
from plastron.server.cli.args import MAX_INPUT_BYTES, CliError, int32_value, read_input
from plastron.spiffe.ids import SpiffeId, TrustDomain, server_id
from plastron.strict_json import load_untrusted_object
from plastron.wire.ids import spiffe_id_to_proto
from plastron.wire.selectors import selector_to_proto

MAX_ENTRIES_PER_FILE = 10_000
_INT64_MAX = (1 << 63) - 1


def spiffe_id_proto(text: str, name: str) -> spiffeid_pb2.SPIFFEID:
    try:
        sid = SpiffeId.parse(text)
    except PlastronError as exc:
        raise CliError(f"-{name}: {exc}") from None
    return spiffe_id_to_proto(sid)


def selector_protos(texts: Sequence[str], name: str = "selector") -> list[selector_pb2.Selector]:
    out = []
    for text in texts:
        try:
            sel = Selector.parse(text)
        except PlastronError as exc:
            raise CliError(f"-{name}: {exc}") from None
        out.append(selector_to_proto(sel))
    return out


def trust_domain_texts(texts: Sequence[str], name: str = "federatesWith") -> list[str]:
    """Validate each trust domain (``td`` or ``spiffe://td``) and keep its name."""
    out = []
    for text in texts:
        try:
            out.append(TrustDomain.parse(text).name)
        except PlastronError as exc:
            raise CliError(f"-{name}: {exc}") from None
    return out


def entry_from_flags(ns: argparse.Namespace, *, update: bool) -> entry_pb2.Entry:
    """Build one entry from create/update flags, with SPIRE's required-flag rules."""
    if update and not ns.entryID:
        raise CliError("entry ID is required")
    if not ns.selector:
        raise CliError("at least one selector is required")
    node = bool(getattr(ns, "node", False))
    if node and ns.federatesWith:
        raise CliError("node entries can not federate")
    if not ns.parentID and not node:
        raise CliError(
            "a parent ID is required"
            if update
            else "a parent ID is required if the node flag is not set"
        )
    if not ns.spiffeID:
        raise CliError("a SPIFFE ID is required")
    spiffe_id = spiffe_id_proto(ns.spiffeID, "spiffeID")
    if node:
        parent_id = spiffe_id_to_proto(server_id(TrustDomain(spiffe_id.trust_domain)))
    else:
        parent_id = spiffe_id_proto(ns.parentID, "parentID")
    if not 0 <= ns.entryExpiry <= _INT64_MAX:
        raise CliError(f"-entryExpiry: {ns.entryExpiry} is out of range")
    entry = entry_pb2.Entry(
        id=ns.entryID,
        spiffe_id=spiffe_id,
        parent_id=parent_id,
        selectors=selector_protos(ns.selector),
        x509_svid_ttl=int32_value(ns.x509SVIDTTL, "x509SVIDTTL"),
        jwt_svid_ttl=int32_value(ns.jwtSVIDTTL, "jwtSVIDTTL"),
        federates_with=trust_domain_texts(ns.federatesWith),
        admin=ns.admin,
        downstream=ns.downstream,
        expires_at=ns.entryExpiry,
        dns_names=ns.dns,
        store_svid=ns.storeSVID,
        hint=ns.hint,
    )
    return entry


# ---- -data files: SPIRE's RegistrationEntries JSON ({"entries": [...]}) -------------------

_STRING_FIELDS = {"parent_id", "spiffe_id", "entry_id", "hint"}
_INT_FIELDS = {"x509_svid_ttl", "jwt_svid_ttl", "entryExpiry"}
_BOOL_FIELDS = {"admin", "downstream", "store_svid"}
_LIST_FIELDS = {"selectors", "federates_with", "dns_names"}
_KNOWN_FIELDS = _STRING_FIELDS | _INT_FIELDS | _BOOL_FIELDS | _LIST_FIELDS


def _typed(doc: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = doc.get(key)
    if value is None:
        return kind()
    # bool is an int in Python; JSON true must not pass as a TTL.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CliError(f"{where}.{key}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _data_selectors(raw: Any, where: str) -> list[selector_pb2.Selector]:
    if not isinstance(raw, list):
        raise CliError(f"{where}.selectors: expected a list")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or set(item) - {"type", "value"}:
            raise CliError(f"{where}.selectors[{i}]: expected {{'type': ..., 'value': ...}}")
        try:
            sel = Selector(str(item.get("type", "")), str(item.get("value", "")))
        except PlastronError as exc:
            raise CliError(f"{where}.selectors[{i}]: {exc}") from None
        out.append(selector_to_proto(sel))
    return out


def _string_list(raw: Any, where: str) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise CliError(f"{where}: expected a list of strings")
    return list(raw)


def _entry_from_doc(doc: Any, where: str) -> entry_pb2.Entry:
    if not isinstance(doc, dict):
        raise CliError(f"{where}: expected a JSON object")
    unknown = sorted(set(doc) - _KNOWN_FIELDS)
    if unknown:
        raise CliError(f"{where}: unknown field {unknown[0]!r}")
    ints = {k: _typed(doc, k, int, where) for k in _INT_FIELDS}
    if not 0 <= ints["entryExpiry"] <= _INT64_MAX:
        raise CliError(f"{where}.entryExpiry: {ints['entryExpiry']} is out of range")
    return entry_pb2.Entry(
        id=_typed(doc, "entry_id", str, where),
        spiffe_id=spiffe_id_proto(_typed(doc, "spiffe_id", str, where), f"{where}.spiffe_id"),
        parent_id=spiffe_id_proto(_typed(doc, "parent_id", str, where), f"{where}.parent_id"),
        selectors=_data_selectors(doc.get("selectors", []), where),
        x509_svid_ttl=int32_value(ints["x509_svid_ttl"], f"{where}.x509_svid_ttl"),
        jwt_svid_ttl=int32_value(ints["jwt_svid_ttl"], f"{where}.jwt_svid_ttl"),
        federates_with=trust_domain_texts(
            _string_list(doc.get("federates_with", []), f"{where}.federates_with"),
            f"{where}.federates_with",
        ),
        dns_names=_string_list(doc.get("dns_names", []), f"{where}.dns_names"),
        admin=_typed(doc, "admin", bool, where),
        downstream=_typed(doc, "downstream", bool, where),
        store_svid=_typed(doc, "store_svid", bool, where),
        expires_at=ints["entryExpiry"],
        hint=_typed(doc, "hint", str, where),
    )


def entries_from_data(path: str) -> list[entry_pb2.Entry]:
    """Parse ``-data`` (a file, or stdin for ``-``) in SPIRE's ``{"entries": [...]}`` shape."""
    raw = read_input(path, "registration entry data")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise CliError(f"-data: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
        raise CliError('-data: expected a JSON object {"entries": [...]}')
    items = doc["entries"]
    if not items:
        raise CliError("-data: no entries in the file")
    if len(items) > MAX_ENTRIES_PER_FILE:
        raise CliError(f"-data: more than {MAX_ENTRIES_PER_FILE} entries")
    return [_entry_from_doc(item, f"entries[{i}]") for i, item in enumerate(items)]


def entry_ids_from_file(path: str) -> list[str]:
    """Parse ``entry delete -file`` (a file, or stdin for ``-``) in SPIRE's shape: the JSON of a
    BatchDeleteEntryRequest, ``{"ids": ["...", ...]}``. Errors name the file."""
    where = "stdin" if path == "-" else path
    raw = read_input(path, "entry IDs file")
    doc = load_untrusted_object(
        raw,
        limit=MAX_INPUT_BYTES,
        what=f"-file {where}",
        error=CliError,
    )
    unknown = sorted(set(doc) - {"ids"})
    if unknown:
        raise CliError(f'-file {where}: unknown key {unknown[0]!r} (expected {{"ids": [...]}})')
    ids = doc.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        raise CliError(f'-file {where}: "ids" must be a list of non-empty strings')
    if not ids:
        raise CliError(f"-file {where}: no entry IDs in the file")
    if len(ids) > MAX_ENTRIES_PER_FILE:
        raise CliError(f"-file {where}: more than {MAX_ENTRIES_PER_FILE} entry IDs")
    return ids
