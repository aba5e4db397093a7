"""UpstreamAuthority ``pkcs11`` (:mod:`plastron.hsm.upstream`): its ``register``, for the
server only. Needs the ``[hsm]`` extra, imported by the factory once the registry has checked
it (see :mod:`plastron.extras`)."""

from __future__ import annotations

from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import ConfigError
from plastron.hsm.plugin import EXTRA
from plastron.plugins import PluginContext, Registries
from plastron.upstream import UpstreamAuthority


def check_pkcs11_upstream(plugin: PluginConfig, context: PluginContext) -> None:
    """The settings, the module file and the PIN; no token session."""
    from plastron.hsm.config import check_token_files  # noqa: PLC0415  # [hsm]
    from plastron.hsm.upstream import read_upstream_settings  # noqa: PLC0415  # [hsm]

    if context.trust_domain is None:
        raise ConfigError(f"{plugin.path}: the pkcs11 UpstreamAuthority needs the trust domain")
    check_token_files(read_upstream_settings(plugin.settings(), context.trust_domain).token)


def _pkcs11_upstream(plugin: PluginConfig, context: PluginContext) -> UpstreamAuthority:
    from plastron.hsm.upstream import open_pkcs11_upstream_authority  # noqa: PLC0415  # [hsm]

    if context.trust_domain is None:
        raise ConfigError(f"{plugin.path}: the pkcs11 UpstreamAuthority needs the trust domain")
    return open_pkcs11_upstream_authority(
        plugin.settings(), trust_domain=context.trust_domain, clock=context.clock
    )


def register(registries: Registries) -> None:
    registries.upstream_authorities.register(
        "pkcs11", _pkcs11_upstream, extra=EXTRA, check=check_pkcs11_upstream
    )
