"""KeyManager ``pkcs11`` and the opener of ``pkcs11:`` key URIs (x509pop's ``private_key_uri``):
their ``register`` (the UpstreamAuthority's is in :mod:`plastron.hsm.upstream_plugin`).

Both need the ``[hsm]`` extra (python-pkcs11). This module does not import it: the factories
import the modules that do, after the registry has checked the extra, so a configuration
without a PKCS#11 plugin never loads it (see :mod:`plastron.extras`).

Besides the token keys (see :mod:`plastron.hsm.config`), plugin_data names this server so
that its labels differ from those of other servers on the same token, as SPIRE's KMS key
managers do: ``key_identifier_value = "server-1"``, or ``key_identifier_file`` (a file holding
the id, created with a random one if absent). Without either, the file is
``<data_dir>/pkcs11_key_identifier``.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from plastron.configs.block import Block
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import ConfigError
from plastron.extras import require_extra
from plastron.hsm.config import check_token_files, read_pkcs11_config
from plastron.keymanager import KeyManager
from plastron.plugins import PluginContext, Registries

EXTRA = "hsm"
DEFAULT_IDENTIFIER_FILE = "pkcs11_key_identifier"


def _identifier_from_file(path: Path, where: str, *, create: bool) -> str | None:
    """The identifier in ``path``, made (a random one) if absent and ``create``; None if
    absent and not ``create`` (``validate``)."""
    if not path.exists():
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first; read theirs
        else:
            with os.fdopen(fd, "w") as f:
                f.write(f"{uuid.uuid4()}\n")
    try:
        text = path.read_text(encoding="utf-8")[:256].strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read key identifier file {str(path)!r}") from exc
    return text


def server_key_identifier(
    settings: Block, context: PluginContext, *, create: bool = True
) -> str | None:
    """This server's id in key labels, from plugin_data or the identifier file (made if absent
    and ``create``; None if absent and not ``create``)."""
    from plastron.hsm.keymanager import SERVER_ID_RE  # noqa: PLC0415  # [hsm] extra

    value = settings.optional_string("key_identifier_value")
    file = settings.optional_string("key_identifier_file")
    if value is not None and file is not None:
        raise ConfigError(
            f"{settings.path}: give key_identifier_value or key_identifier_file, not both"
        )
    if value is None:
        if file is not None:
            path = context.resolve(file)
        elif context.data_dir is not None:
            path = context.data_dir / DEFAULT_IDENTIFIER_FILE
        else:
            raise ConfigError(f"{settings.path}: key_identifier_file is required (no data_dir)")
        value = _identifier_from_file(path, settings.path, create=create)
        if value is None:
            return None
    if not SERVER_ID_RE.fullmatch(value):
        raise ConfigError(
            f"{settings.path}: key identifier {value!r} must be 1-64 characters of"
            " A-Z a-z 0-9 . _ : -"
        )
    return value


def check_pkcs11_key_manager(plugin: PluginConfig, context: PluginContext) -> None:
    """The settings, the module file, the PIN and an existing identifier file; no token
    session, no file created."""
    settings = plugin.settings()
    server_key_identifier(settings, context, create=False)
    check_token_files(read_pkcs11_config(settings))


def _pkcs11_key_manager(plugin: PluginConfig, context: PluginContext) -> KeyManager:
    if context.trust_domain is None:
        raise ConfigError(f"{plugin.path}: the pkcs11 KeyManager needs the trust domain")
    from plastron.hsm.keymanager import open_pkcs11_key_manager  # noqa: PLC0415  # [hsm] extra

    settings = plugin.settings()
    server_id = server_key_identifier(settings, context)
    assert server_id is not None  # made when absent
    return open_pkcs11_key_manager(
        read_pkcs11_config(settings), trust_domain=context.trust_domain, server_id=server_id
    )


def open_pkcs11_uri(uri: str) -> tuple[KeyManager, str]:
    """The KeyUriOpener of ``pkcs11:`` URIs; needs the [hsm] extra."""
    require_extra(EXTRA, 'a "pkcs11:" key URI')
    from plastron.hsm.uri_key import open_uri_key  # noqa: PLC0415  # [hsm] extra

    return open_uri_key(uri)


def register(registries: Registries) -> None:
    registries.key_managers.register(
        "pkcs11", _pkcs11_key_manager, extra=EXTRA, check=check_pkcs11_key_manager
    )
    registries.key_uri_openers["pkcs11"] = open_pkcs11_uri
