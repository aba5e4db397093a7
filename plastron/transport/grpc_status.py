"""Plastron errors → gRPC status codes: one table for the server API and the Workload API."""

from __future__ import annotations

from grpclib.const import Status

from plastron import errors

_STATUS_BY_ERROR: tuple[tuple[type[errors.PlastronError], Status], ...] = (
    (errors.InvalidArgument, Status.INVALID_ARGUMENT),
    (errors.NotFound, Status.NOT_FOUND),
    (errors.AlreadyExists, Status.ALREADY_EXISTS),
    (errors.NotAuthorized, Status.PERMISSION_DENIED),
    (errors.AttestationFailed, Status.PERMISSION_DENIED),
    (errors.FailedPrecondition, Status.FAILED_PRECONDITION),
    (errors.Unavailable, Status.UNAVAILABLE),
)


def status_for(exc: errors.PlastronError) -> Status:
    """The code for ``exc``; anything not listed (KeyManagerError, DataStoreError, …) is
    INTERNAL."""
    for kind, status in _STATUS_BY_ERROR:
        if isinstance(exc, kind):
            return status
    return Status.INTERNAL


def status_message(exc: BaseException) -> str:
    """``str(exc)`` as it may travel in a grpc-message trailer: characters UTF-8 cannot encode
    (lone surrogates, which JSON ``\\ud800`` escapes produce from untrusted input) are written as
    escapes, because one unencodable character makes the status impossible to send."""
    return str(exc).encode("utf-8", "backslashreplace").decode("utf-8")
