"""What a runtime offers its plugins besides their config: the host services on
:class:`~plastron.plugins.PluginContext`.

A plugin that needs the server's state (the datastore, the trust bundle) gets a narrow callable
here rather than the object itself, so the plugin stays in core or a hardware room and the
runtime decides what it may touch. A service a runtime does not offer is None; a factory that
needs it refuses to build with a ConfigError.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from cryptography import x509


@dataclass(frozen=True)
class ConsumedToken:
    """A join token the datastore has just deleted (consumed), with its expiry."""

    token: str = field(repr=False)
    expires_at: dt.datetime


# Deletes the token and returns it, or None when no such token exists (atomic in the datastore).
ConsumeTokenFn = Callable[[str], Awaitable[ConsumedToken | None]]
# The trust domain's current X.509 authorities, fetched per call.
X509AuthoritiesFn = Callable[[], Awaitable[Sequence[x509.Certificate]]]


@dataclass(frozen=True)
class HostServices:
    # Server: the trust domain's X.509 authorities (x509pop mode "spiffe").
    x509_authorities: X509AuthoritiesFn | None = None
    # Server: consume a join token, atomically (join_token).
    consume_join_token: ConsumeTokenFn | None = None
    # Agent: the join token from -joinToken, agent.join_token or agent.join_token_file.
    join_token: str | None = field(default=None, repr=False)
