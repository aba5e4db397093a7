"""The agent CLI's Workload API socket choice; the client itself is in core."""

from __future__ import annotations

import os

from plastron.errors import ConfigError
from plastron.workloadapi_client import METADATA, WorkloadClient

__all__ = ["DEFAULT_SOCKET_PATH", "METADATA", "WorkloadClient", "socket_path_from"]

DEFAULT_SOCKET_PATH = "/tmp/plastron-agent/public/api.sock"  # noqa: S108 - SPIRE's layout


def socket_path_from(flag: str | None) -> str:
    """The -socketPath flag, else SPIFFE_ENDPOINT_SOCKET (unix://...), else the default."""
    if flag:
        return flag
    env = os.environ.get("SPIFFE_ENDPOINT_SOCKET", "")
    if env:
        if not env.startswith("unix://"):
            raise ConfigError(f"SPIFFE_ENDPOINT_SOCKET {env!r} must be unix:///absolute/path")
        path = env[len("unix://") :]
        if not path.startswith("/"):
            raise ConfigError(f"SPIFFE_ENDPOINT_SOCKET {env!r} must name an absolute path")
        return path
    return DEFAULT_SOCKET_PATH
