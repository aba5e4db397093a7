"""Plastron errors → gRPC status codes, in one place for the Workload API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plastron import errors

log = logging.getLogger("plastron.agent.workloadapi")

_CODES: list[tuple[type[errors.PlastronError], Status]] = [
    (errors.InvalidArgument, Status.INVALID_ARGUMENT),
    (errors.NotFound, Status.NOT_FOUND),
    (errors.AlreadyExists, Status.ALREADY_EXISTS),
    (errors.NotAuthorized, Status.PERMISSION_DENIED),
    (errors.AttestationFailed, Status.PERMISSION_DENIED),
    (errors.FailedPrecondition, Status.FAILED_PRECONDITION),
    (errors.Unavailable, Status.UNAVAILABLE),
]


def grpc_error(exc: errors.PlastronError) -> GRPCError:
    for kind, status in _CODES:
        if isinstance(exc, kind):
            return GRPCError(status, str(exc))
    return GRPCError(Status.INTERNAL, str(exc))


@asynccontextmanager
async def mapped_errors(method: str) -> AsyncIterator[None]:
    """Turn PlastronErrors raised inside into the matching gRPC status."""
    try:
        yield
    except errors.PlastronError as exc:
        err = grpc_error(exc)
        log.info(
            "workload API call refused method=%s status=%s reason=%s", method, err.status.name, exc
        )
        raise err from exc
