"""The ``join_token`` attestation method (SPIRE's format: the payload is the token string).

Server half: the token is consumed atomically (single use) and must not have expired; the agent
ID is ``spiffe://<td>/spire/agent/join_token/<token>``. Join-token agents cannot re-attest: a
token is gone once used, so an evicted agent needs a new token. It reaches the datastore only
through the host service ``consume_join_token``; the server enables it whether or not it is
configured, as SPIRE does.
Agent half: sends the token the agent was given (host service ``join_token``: ``-joinToken``,
``agent.join_token`` or ``agent.join_token_file``).
Neither half takes ``plugin_data``.
"""

from __future__ import annotations

import string

from plastron.attestors.base import AttestationResult, ChallengeFn
from plastron.clock import Clock
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import AttestationFailed, ConfigError
from plastron.host_services import ConsumeTokenFn
from plastron.plugins import PluginContext, Registries
from plastron.spiffe.ids import TrustDomain, agent_id

NAME = "join_token"
MAX_TOKEN_LENGTH = 256
# Tokens become a SPIFFE ID path segment, so only path-safe characters are allowed.
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "-_.")


def check_token_shape(token: str) -> None:
    if not token:
        raise AttestationFailed("join_token: token is empty")
    if len(token) > MAX_TOKEN_LENGTH:
        raise AttestationFailed(f"join_token: token is longer than {MAX_TOKEN_LENGTH} characters")
    if any(ch not in _TOKEN_CHARS for ch in token):
        raise AttestationFailed(
            "join_token: token may contain only letters, digits, '-', '_' and '.'"
        )
    if token in (".", ".."):
        # a dot segment is not a valid SPIFFE ID path segment: no agent ID can be built from it
        raise AttestationFailed("join_token: token may not be '.' or '..'")


class JoinTokenServerAttestor:
    name = NAME

    def __init__(self, trust_domain: TrustDomain, consume: ConsumeTokenFn, clock: Clock) -> None:
        self._td = trust_domain
        self._consume = consume
        self._clock = clock

    async def attest(self, payload: bytes, challenge: ChallengeFn) -> AttestationResult:
        try:
            token = payload.decode("ascii")
        except UnicodeDecodeError:
            raise AttestationFailed("join_token: token is not ASCII") from None
        check_token_shape(token)
        consumed = await self._consume(token)
        # The message never echoes the token: it is a bearer secret until consumed.
        if consumed is None:
            raise AttestationFailed("join_token: token does not exist or has already been used")
        if consumed.expires_at <= self._clock.now():
            raise AttestationFailed("join_token: token has expired")
        return AttestationResult(
            agent_id=agent_id(self._td, NAME, token), selectors=(), can_reattest=False
        )


class JoinTokenAgentAttestor:
    name = NAME

    def __init__(self, token: str) -> None:
        check_token_shape(token)
        self._token = token

    async def payload(self) -> bytes:
        return self._token.encode("ascii")

    async def answer(self, challenge: bytes) -> bytes:
        raise AttestationFailed("join_token: the server sent a challenge; join_token has none")

    def __repr__(self) -> str:
        return "JoinTokenAgentAttestor(token=<redacted>)"


def check_settings(plugin: PluginConfig, context: PluginContext) -> None:
    """join_token takes no plugin_data (the agent's token is agent.join_token or a flag)."""
    plugin.settings().finish()


def create_server_attestor(plugin: PluginConfig, context: PluginContext) -> JoinTokenServerAttestor:
    check_settings(plugin, context)
    consume = context.services.consume_join_token
    if context.trust_domain is None or consume is None:
        raise ConfigError(f"{plugin.path}: the server attestor needs the trust domain and tokens")
    return JoinTokenServerAttestor(context.trust_domain, consume, context.clock)


def create_agent_attestor(plugin: PluginConfig, context: PluginContext) -> JoinTokenAgentAttestor:
    check_settings(plugin, context)
    token = context.services.join_token
    if not token:
        raise ConfigError("join_token attestation needs -joinToken or agent.join_token")
    return JoinTokenAgentAttestor(token)


def register(registries: Registries) -> None:
    registries.server_node_attestors.register(NAME, create_server_attestor, check=check_settings)
    registries.agent_node_attestors.register(NAME, create_agent_attestor, check=check_settings)
