"""Where the server API's errors become gRPC statuses (the code table is shared with the
Workload API: plastron.transport.grpc_status).

Handlers raise PlastronError subclasses; ``grpc_error`` turns them into a grpclib GRPCError with
the matching code and the error's message (which already names the field and the rule).
Anything unexpected becomes INTERNAL with a generic message and a log line, never a traceback
to the caller.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from google.protobuf.message import DecodeError
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plastron import errors
from plastron.proto.spire.api.types import status_pb2
from plastron.transport.grpc_status import status_for, status_message

log = logging.getLogger(__name__)

__all__ = [
    "grpc_error",
    "item_status",
    "mapped_errors",
    "status_for",
    "status_proto",
    "unimplemented",
]


def grpc_error(exc: BaseException) -> GRPCError:
    if isinstance(exc, GRPCError):
        return exc
    if isinstance(exc, errors.PlastronError):
        return GRPCError(status_for(exc), status_message(exc))
    if isinstance(exc, DecodeError):
        # grpclib decodes a request inside the handler's recv_message: bytes from the caller
        return GRPCError(Status.INVALID_ARGUMENT, f"request is not a valid message: {exc}")
    log.exception("internal error", exc_info=exc)
    return GRPCError(Status.INTERNAL, "internal error")


@asynccontextmanager
async def mapped_errors() -> AsyncIterator[None]:
    """Wrap a handler body so every exception leaves as a proper gRPC status."""
    try:
        yield
    except GRPCError:
        raise
    except Exception as exc:
        raise grpc_error(exc) from None


def item_status(exc: BaseException | None) -> tuple[int, str]:
    """(code, message) for a per-item ``types.Status`` in batch responses."""
    if exc is None:
        return Status.OK.value, ""
    err = grpc_error(exc)
    return err.status.value, err.message or ""


def status_proto(exc: BaseException | None) -> status_pb2.Status:
    """A batch item's ``types.Status``: OK for None, else the error's code and message."""
    code, message = item_status(exc)
    return status_pb2.Status(code=code, message=message)


async def unimplemented(stream: Any, name: str) -> None:
    """Answer a method Plastron does not offer (yet) with UNIMPLEMENTED."""
    await stream.recv_message()
    raise GRPCError(Status.UNIMPLEMENTED, f"{name} is not supported by this server")
