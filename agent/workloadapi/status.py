"""Plastron errors → gRPC status codes, in one place for the Workload API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from grpclib.exceptions import GRPCError

from plastron import errors
from plastron.transport.grpc_status import status_for

log = logging.getLogger("plastron.agent.workloadapi")


def grpc_error(exc: errors.PlastronError) -> GRPCError:
    return GRPCError(status_for(exc), str(exc))


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
