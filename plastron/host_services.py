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

from plastron.spiffe.ids import SpiffeId


@dataclass(frozen=True)
class ConsumedToken:
    """A join token the datastore has just deleted (consumed), with its expiry."""

    token: str = field(repr=False)
    expires_at: dt.datetime


# Deletes the token and returns it, or None when no such token exists (atomic in the datastore).
ConsumeTokenFn = Callable[[str], Awaitable[ConsumedToken | None]]
# Whether a node record exists for the agent ID (attested and not evicted; banned counts).
AgentAttestedFn = Callable[[SpiffeId], Awaitable[bool]]
# The trust domain's current X.509 authorities, fetched per call.
X509AuthoritiesFn = Callable[[], Awaitable[Sequence[x509.Certificate]]]


@dataclass(frozen=True)
class HostServices:
    # Server: the trust domain's X.509 authorities (x509pop mode "spiffe").
    x509_authorities: X509AuthoritiesFn | None = None
    # Server: consume a join token, atomically (join_token).
    consume_join_token: ConsumeTokenFn | None = None
    # Server: trust on first use (gcp_iit, azure_msi, aws_iid): refuse an instance already
    # attested. The server also refuses it atomically when it writes the node record.
    agent_attested: AgentAttestedFn | None = None
    # Agent: the join token from -joinToken, agent.join_token or agent.join_token_file.
    join_token: str | None = field(default=None, repr=False)
