"""Text the CLI prints: SPIRE's pretty layouts for entries and agents, and its JSON output."""

from __future__ import annotations

import datetime as _dt
import json
import sys
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from plastron.proto.spire.api.types import agent_pb2, entry_pb2, spiffeid_pb2


def proto_json(message: Message) -> str:
    """One message as SPIRE's ``-output json`` prints it: proto field names, defaults included."""
    doc = MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    return json.dumps(doc, separators=(",", ":"))


def print_json(message: Message) -> None:
    print(proto_json(message))


def print_json_value(value: Any) -> None:
    print(json.dumps(value, separators=(",", ":")))


def plural(count: int, singular: str, plural_form: str) -> str:
    return singular if count == 1 else plural_form


def print_count(resp: Any, output: str, singular: str, plural_form: str) -> None:
    """A ``count`` verb's answer: the response as JSON, or SPIRE's "N things" line."""
    if output == "json":
        print_json(resp)
    else:
        print(f"{resp.count} {plural(resp.count, singular, plural_form)}")


def id_string(sid: spiffeid_pb2.SPIFFEID | None) -> str:
    if sid is None or (not sid.trust_domain and not sid.path):
        return ""
    return f"spiffe://{sid.trust_domain}{sid.path}"


def unix_time_utc(seconds: int) -> str:
    """Go's ``time.Time.String()`` shape in UTC: ``2026-01-02 15:04:05 +0000 UTC``."""
    try:
        when = _dt.datetime.fromtimestamp(seconds, tz=_dt.UTC)
    except (OverflowError, OSError, ValueError):
        return f"{seconds} (unix seconds)"
    return when.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def _row(label: str, value: object, width: int) -> str:
    return f"{label:<{width}}: {value}"


def entry_lines(entry: entry_pb2.Entry) -> list[str]:
    """SPIRE's ``printEntry`` block (without the trailing blank line)."""
    w = 24
    rows = [
        _row("Entry ID", entry.id or "(none)", w),
        _row("SPIFFE ID", id_string(entry.spiffe_id), w),
        _row("Parent ID", id_string(entry.parent_id), w),
        _row("Revision", entry.revision_number, w),
    ]
    if entry.downstream:
        rows.append(_row("Downstream", "true", w))
    rows.append(_row("X509-SVID TTL", entry.x509_svid_ttl or "default", w))
    rows.append(_row("JWT-SVID TTL", entry.jwt_svid_ttl or "default", w))
    if entry.expires_at:
        rows.append(_row("Expiration time", unix_time_utc(entry.expires_at), w))
    rows.extend(_row("Selector", f"{s.type}:{s.value}", w) for s in entry.selectors)
    rows.extend(_row("FederatesWith", td, w) for td in entry.federates_with)
    rows.extend(_row("DNS name", name, w) for name in entry.dns_names)
    if entry.admin:
        rows.append(_row("Admin", "true", w))
    if entry.store_svid:
        rows.append(_row("StoreSvid", "true", w))
    if entry.hint:
        rows.append(_row("Hint", entry.hint, w))
    if entry.HasField("additional_attributes"):
        attrs = entry.additional_attributes
        if attrs.disable_x509_svid_prefetch:
            rows.append(_row("DisableX509SvidPrefetch", "true", w))
        if attrs.jwt_svid_include_jti:
            rows.append(_row("JwtSvidIncludeJti", "true", w))
    return rows


def print_entry(entry: entry_pb2.Entry) -> None:
    sys.stdout.write("\n".join(entry_lines(entry)) + "\n\n")


def entry_sort_key(entry: entry_pb2.Entry) -> tuple[str, str, list[tuple[str, str]], str]:
    selectors = sorted((s.type, s.value) for s in entry.selectors)
    return (id_string(entry.spiffe_id), id_string(entry.parent_id), selectors, entry.id)


def agent_lines(agent: agent_pb2.Agent) -> list[str]:
    """SPIRE's ``printAgents`` block for one agent (without the trailing blank line)."""
    w = 18
    rows = [
        _row("SPIFFE ID", id_string(agent.id), w),
        _row("Attestation type", agent.attestation_type, w),
        _row("Expiration time", unix_time_utc(agent.x509svid_expires_at), w),
    ]
    # A banned agent has an empty serial; SPIRE shows the ban instead.
    if agent.banned:
        rows.append(_row("Banned", "true", w))
    else:
        rows.append(_row("Serial number", agent.x509svid_serial_number, w))
    rows.append(_row("Can re-attest", "true" if agent.can_reattest else "false", w))
    if agent.agent_version:
        rows.append(_row("Agent version", agent.agent_version, w))
    return rows


def agent_selector_lines(agent: agent_pb2.Agent) -> list[str]:
    return [_row("Selectors", f"{s.type}:{s.value}", 18) for s in agent.selectors]
