"""The CLI's connection to the server's admin Unix socket, with errors turned into CliError.

Every RPC goes through :meth:`AdminClient.call`, the one place where grpclib and socket
failures become the single ``Error: ...`` line the CLI prints (shaped like SPIRE's
``rpc error: code = InvalidArgument desc = ...``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from plastron.proto.grpc.health.v1 import health_grpc
from plastron.proto.spire.api.server.agent.v1 import agent_grpc
from plastron.proto.spire.api.server.bundle.v1 import bundle_grpc
from plastron.proto.spire.api.server.debug.v1 import debug_grpc
from plastron.proto.spire.api.server.entry.v1 import entry_grpc
from plastron.proto.spire.api.server.localauthority.v1 import localauthority_grpc
from plastron.proto.spire.api.server.logger.v1 import logger_grpc
from plastron.proto.spire.api.server.svid.v1 import svid_grpc
from plastron.proto.spire.api.server.trustdomain.v1 import trustdomain_grpc
from plastron.server.cli.args import CliError

DEFAULT_TIMEOUT_SECONDS = 30.0
_T = TypeVar("_T")

# gRPC status names as Go's codes.Code prints them, so messages read like SPIRE's.
_GO_CODE_NAMES = {
    0: "OK",
    1: "Canceled",
    2: "Unknown",
    3: "InvalidArgument",
    4: "DeadlineExceeded",
    5: "NotFound",
    6: "AlreadyExists",
    7: "PermissionDenied",
    8: "ResourceExhausted",
    9: "FailedPrecondition",
    10: "Aborted",
    11: "OutOfRange",
    12: "Unimplemented",
    13: "Internal",
    14: "Unavailable",
    15: "DataLoss",
    16: "Unauthenticated",
}


def code_name(code: int) -> str:
    return _GO_CODE_NAMES.get(code, f"Code({code})")


def one_line(text: str) -> str:
    """Collapse a server-supplied message to one line so stderr stays one line per failure."""
    return " ".join(text.split())


class AdminClient:
    """Stubs for the admin API over one grpclib channel on a Unix socket."""

    def __init__(self, socket_path: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.channel = Channel(path=socket_path)
        self.entry = entry_grpc.EntryStub(self.channel)
        self.agent = agent_grpc.AgentStub(self.channel)
        self.bundle = bundle_grpc.BundleStub(self.channel)
        self.svid = svid_grpc.SVIDStub(self.channel)
        self.localauthority = localauthority_grpc.LocalAuthorityStub(self.channel)
        self.health = health_grpc.HealthStub(self.channel)
        self.trustdomain = trustdomain_grpc.TrustDomainStub(self.channel)
        self.debug = debug_grpc.DebugStub(self.channel)
        self.logger = logger_grpc.LoggerStub(self.channel)

    async def call(self, method: Any, request: Any, *, context: str = "") -> Any:
        """Invoke a unary stub method; any failure becomes a one-line CliError."""
        prefix = f"{context}: " if context else ""
        try:
            return await method(request, timeout=self.timeout)
        except GRPCError as exc:
            message = one_line(exc.message or "")
            raise CliError(
                f"{prefix}rpc error: code = {code_name(exc.status.value)} desc = {message}"
            ) from exc
        except TimeoutError as exc:
            raise CliError(
                f"{prefix}rpc error: code = {code_name(Status.DEADLINE_EXCEEDED.value)} "
                f"desc = no answer within {self.timeout:g}s (socket {self.socket_path})"
            ) from exc
        except (StreamTerminatedError, ProtocolError) as exc:
            raise CliError(
                f"{prefix}connection error: {one_line(str(exc))} (socket {self.socket_path})"
            ) from exc
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise CliError(
                f"{prefix}connection error: {reason} "
                f"(is the server running? socket {self.socket_path})"
            ) from exc

    def close(self) -> None:
        self.channel.close()


def run_with_client(
    socket_path: str, body: Callable[[AdminClient], Awaitable[_T]], *, timeout: float | None = None
) -> _T:
    """Run ``body`` with a fresh client on its own event loop and always close the channel."""

    async def _main() -> _T:
        client = AdminClient(socket_path, timeout=timeout or DEFAULT_TIMEOUT_SECONDS)
        try:
            return await body(client)
        finally:
            client.close()

    return asyncio.run(_main())


def call_one(
    socket_path: str,
    method: Callable[[AdminClient], Any],
    request: Any,
    *,
    context: str = "",
    timeout: float | None = None,
) -> Any:
    """One unary call (``method`` picks the stub method from the client), as a CLI command
    makes it: fresh client, one-line errors, channel closed."""

    async def body(client: AdminClient) -> Any:
        return await client.call(method(client), request, context=context)

    return run_with_client(socket_path, body, timeout=timeout)
