"""The audit log (``audit_log_enabled = true``): one line per API call, as SPIRE's server.

Each line is logged by ``plastron.audit`` at INFO with ``type=audit``, a ``request_id``, the
method, who called (``caller_id`` for an X509-SVID over TLS, ``caller_addr``; ``caller_uid``,
``caller_gid``, ``caller_pid``, ``caller_path`` on the admin socket), the request summary
(``request``) and the result (``status`` success|error, ``status_code``, ``status_message``).
Handlers may add what only they know (the agent ID an attestation produced) with
:func:`add_audit_fields`. Calls refused by authorization are audited too.

The summary never holds a secret: bytes fields (attestation payloads, challenge answers, CSRs,
keys) appear as their length, string fields named in ``SECRET_FIELDS`` (a join token's value)
as ``[redacted]``; long lists and the summary as a whole are bounded.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from plastron.logs import fields
from plastron.transport.peer import PeerInfo, peer_info

audit_log = logging.getLogger("plastron.audit")

SECRET_FIELDS = frozenset({"token", "pin", "password", "secret", "private_key", "credential"})
MAX_LIST_ITEMS = 10
MAX_DEPTH = 6
MAX_SUMMARY_CHARS = 4096
# Health checks are not API calls an operator audits (probes call them every few seconds).
UNAUDITED_PREFIXES = ("/grpc.health.v1.Health/",)

_EXTRA: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "plastron_audit_fields", default=None
)

HandlerFn = Callable[[Stream[Any, Any]], Awaitable[None]]


def add_audit_fields(**values: Any) -> None:
    """Fields for the audit line of the call being handled (ignored when audit is off)."""
    extra = _EXTRA.get()
    if extra is not None:
        extra.update(values)


def summarize(message: Message, depth: int = 0) -> dict[str, Any]:
    """The set fields of a request as plain values, secrets and bytes left out."""
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        if field.is_repeated:
            items = list(value)
            shown = [_value(field, v, depth) for v in items[:MAX_LIST_ITEMS]]
            if len(items) > MAX_LIST_ITEMS:
                shown.append(f"... {len(items) - MAX_LIST_ITEMS} more")
            out[field.name] = shown
        else:
            out[field.name] = _value(field, value, depth)
    return out


def _value(field: FieldDescriptor, value: Any, depth: int) -> Any:
    if field.name in SECRET_FIELDS:
        return "[redacted]"
    if field.type == FieldDescriptor.TYPE_BYTES:
        return f"<{len(value)} bytes>"
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            return "<map>"
        return summarize(value, depth + 1) if depth < MAX_DEPTH else "<...>"
    if field.type == FieldDescriptor.TYPE_ENUM:
        named = field.enum_type.values_by_number.get(value) if field.enum_type else None
        return named.name if named is not None else value
    return value


def _summary_text(message: Message | None) -> str:
    if message is None:
        return ""
    text = json.dumps(summarize(message), separators=(",", ":"), default=str)
    if len(text) > MAX_SUMMARY_CHARS:
        return text[:MAX_SUMMARY_CHARS] + "...(truncated)"
    return text


def caller_fields(peer: PeerInfo) -> dict[str, Any]:
    """Who called, as SPIRE names it: the SVID's ID and address, or the local process."""
    found: dict[str, Any] = {}
    if peer.spiffe_id is not None:
        found["caller_id"] = str(peer.spiffe_id)
    if peer.address is not None:
        found["caller_addr"] = f"{peer.address[0]}:{peer.address[1]}"
    creds = peer.credentials
    if creds is not None:
        found.update(caller_uid=creds.uid, caller_gid=creds.gid, caller_pid=creds.pid)
        # exited already, or not ours to read: the uid still says who
        with contextlib.suppress(OSError):
            found["caller_path"] = os.readlink(f"/proc/{creds.pid}/exe")
    return found


class _RecordingStream:
    """The handler's stream, remembering the first request message for the summary."""

    def __init__(self, stream: Stream[Any, Any]) -> None:
        self._stream = stream
        self.first: Message | None = None

    async def recv_message(self) -> Any:
        message = await self._stream.recv_message()
        if self.first is None and isinstance(message, Message):
            self.first = message
        return message

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def audited(func: HandlerFn, path: str) -> HandlerFn:
    """``func`` with one audit line per call; ``func`` raises GRPCError for every failure."""
    if path.startswith(UNAUDITED_PREFIXES):
        return func

    async def audited_call(stream: Stream[Any, Any]) -> None:
        recording = _RecordingStream(stream)
        extra: dict[str, Any] = {}
        token = _EXTRA.set(extra)
        status, message = Status.OK, ""
        try:
            await func(recording)  # type: ignore[arg-type]
        except GRPCError as exc:
            status, message = exc.status, exc.message or ""
            raise
        except BaseException:
            status, message = Status.CANCELLED, "the call ended before it completed"
            raise
        finally:
            _EXTRA.reset(token)
            result = {"status": "success" if status == Status.OK else "error"}
            result["status_code"] = status.name
            if status != Status.OK:
                result["status_message"] = message
            _log_call(stream, path, recording.first, {**extra, **result})

    return audited_call


def _log_call(
    stream: Stream[Any, Any],
    path: str,
    request: Message | None,
    outcome: dict[str, Any],
) -> None:
    try:
        caller = caller_fields(peer_info(stream))
    except Exception as exc:  # a peer that cannot be read is still worth a line
        caller = {"caller_error": str(exc)}
    service, _, method = path.strip("/").rpartition("/")
    line: dict[str, Any] = {
        "type": "audit",
        "request_id": str(uuid.uuid4()),
        "service": service,
        "method": method,
        **caller,
        "request": _summary_text(request),
        **outcome,
    }
    audit_log.info("API accessed", extra=fields(**line))
