"""Plastron errors → gRPC status codes, in one place for the services on the agent socket."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from google.protobuf.message import DecodeError
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plastron import errors
from plastron.transport.grpc_status import status_for, status_message

log = logging.getLogger("plastron.agent.workloadapi")


def grpc_error(exc: errors.PlastronError) -> GRPCError:
    return GRPCError(status_for(exc), status_message(exc))


@asynccontextmanager
async def mapped_errors(method: str, api: str = "workload API") -> AsyncIterator[None]:
    """Turn PlastronErrors raised inside, and requests that are not valid protobuf (grpclib
    decodes them in the handler's recv_message), into the matching gRPC status; ``api`` names
    the service in the log line."""
    try:
        yield
    except DecodeError as exc:
        log.info("%s call refused method=%s status=INVALID_ARGUMENT %s", api, method, exc)
        raise GRPCError(Status.INVALID_ARGUMENT, f"request is not a valid message: {exc}") from None
    except errors.PlastronError as exc:
        err = grpc_error(exc)
        log.info("%s call refused method=%s status=%s reason=%s", api, method, err.status.name, exc)
        raise err from exc
