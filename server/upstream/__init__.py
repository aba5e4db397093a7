"""UpstreamAuthority plugins: an outside CA that signs the server's X.509 CA."""

from plastron.server.upstream.base import UpstreamAuthority, UpstreamUnsupported

__all__ = ["UpstreamAuthority", "UpstreamUnsupported"]
