"""SPIRE settings Plastron does not implement, refused by name.

A SPIRE operator's config file is read as SPIRE would read it, with one difference: a setting
that SPIRE honours and Plastron does not is an error, never accepted and then ignored. An
ignored ``Notifier`` would let an operator believe something runs that does not. The error is
one line naming the key: ``not supported by Plastron: server.profiling_enabled``.

Keys SPIRE does not know either stay "unknown key" errors (a typo is not an unsupported
feature).
"""

from __future__ import annotations

from collections.abc import Iterable

from plastron.configs.block import Block
from plastron.errors import ConfigError

NOT_SUPPORTED = "not supported by Plastron"

# SPIRE server keys (``server {}``) Plastron does not implement.
SERVER_UNSUPPORTED = (
    "disable_jwt_svids",
    "log_source_location",
    "max_attested_node_info_staleness",
    "profiling_enabled",
    "profiling_freq",
    "profiling_names",
    "profiling_port",
    "proxy_protocol_trusted_cidrs",
)
# ``server { experimental {} }``: Plastron's entry cache is always event-driven
# (``events_based_cache`` would change nothing) and rebuilt hourly; ``cache_reload_interval``,
# how often it reads the change events, is implemented. The rest are SPIRE features Plastron
# lacks.
SERVER_EXPERIMENTAL_UNSUPPORTED = (
    "agent_spiffe_id_as_selector",
    "auth_opa_policy_engine",
    "event_timeout",
    "events_based_cache",
    "feature_flags",
    "full_cache_reload_interval",
    "named_pipe_name",
    "prune_events_older_than",
    "require_pq_kem",
    "sql_transaction_timeout",
    "wit_issuer",
    "wit_key_type",
)
SERVER_PLUGIN_TYPES_UNSUPPORTED = ("BundlePublisher", "CredentialComposer", "Notifier")

# SPIRE agent keys (``agent {}``) Plastron does not implement.
AGENT_UNSUPPORTED = (
    "allow_unauthenticated_verifiers",
    "allowed_foreign_jwt_claims",
    "availability_target",
    "disable_workload_api",
    "log_selectors",
    "log_source_location",
    "profiling_enabled",
    "profiling_freq",
    "profiling_names",
    "profiling_port",
    "rebootstrap_delay",
    "rebootstrap_mode",
    "trust_bundle_spiffe_workload_api",
    "trust_bundle_unix_socket",
)
AGENT_EXPERIMENTAL_UNSUPPORTED = (
    "admin_named_pipe_name",
    "broker",
    "feature_flags",
    "jwt_svid_cache_hit_timeout",
    "named_pipe_name",
    "ratelimit",
    "require_pq_kem",
    "use_sync_authorized_entries",
)
AGENT_PLUGIN_TYPES_UNSUPPORTED = ("SVIDStore",)


def not_supported(where: str) -> ConfigError:
    """The one-line error for a SPIRE setting Plastron does not implement."""
    return ConfigError(f"{NOT_SUPPORTED}: {where}")


def refuse_unsupported(block: Block, keys: Iterable[str]) -> None:
    """Raise :func:`not_supported` for the first of ``keys`` present in ``block``."""
    for key in sorted(keys):
        if block.has(key):
            raise not_supported(block.where(key))
