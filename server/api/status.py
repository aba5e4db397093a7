"""The one place where Plastron errors become gRPC statuses.

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

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plastron import errors

log = logging.getLogger(__name__)

_STATUS_BY_ERROR: tuple[tuple[type[errors.PlastronError], Status], ...] = (
    (errors.InvalidArgument, Status.INVALID_ARGUMENT),
    (errors.NotFound, Status.NOT_FOUND),
    (errors.AlreadyExists, Status.ALREADY_EXISTS),
    (errors.NotAuthorized, Status.PERMISSION_DENIED),
    (errors.AttestationFailed, Status.PERMISSION_DENIED),
    (errors.FailedPrecondition, Status.FAILED_PRECONDITION),
    (errors.Unavailable, Status.UNAVAILABLE),
    (errors.KeyManagerError, Status.INTERNAL),
    (errors.DataStoreError, Status.INTERNAL),
)


def status_for(exc: errors.PlastronError) -> Status:
    for kind, status in _STATUS_BY_ERROR:
        if isinstance(exc, kind):
            return status
    return Status.INTERNAL


def grpc_error(exc: BaseException) -> GRPCError:
    if isinstance(exc, GRPCError):
        return exc
    if isinstance(exc, errors.PlastronError):
        return GRPCError(status_for(exc), str(exc))
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


async def unimplemented(stream: Any, name: str) -> None:
    """Answer a method Plastron does not offer (yet) with UNIMPLEMENTED."""
    await stream.recv_message()
    raise GRPCError(Status.UNIMPLEMENTED, f"{name} is not supported by this server")
