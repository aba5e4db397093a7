"""Optional dependencies, by the pip extra that installs them.

``pip install plastron`` gives the server and the agent with the plugins that need nothing
beyond the base dependencies (join_token, x509pop with file keys, the server halves of tpm and
tpm_devid, the disk and memory KeyManagers, SQLite). A plugin that needs more names its extra
when it is registered; the registry calls :func:`require_extra` before building it, so a
configuration that names it on an install without the extra fails at load time with one line::

    KeyManager "pkcs11" needs the [hsm] extra: pip install 'plastron[hsm]'

The extra's modules are imported only then: a join_token/disk agent never imports pkcs11 or
tpm2_pytss. The names here match ``[project.optional-dependencies]`` in pyproject.toml (a unit
test keeps the two in step).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType

from plastron.errors import ConfigError

#: The top-level modules each extra provides, by extra name.
EXTRA_MODULES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "hsm": ("pkcs11",),  # python-pkcs11
        "tpm": ("tpm2_pytss",),  # tpm2-pytss (needs the libtss2 libraries)
        "postgres": ("psycopg",),
        "mysql": ("pymysql",),
        "cloud": ("asn1crypto", "boto3"),  # aws_iid's CMS parsing, the AWS API client
        "k8s": ("yaml",),  # k8s_psat: kubeconfig files
    }
)


class MissingExtra(ConfigError):
    """A configured plugin needs an extra that is not installed (or does not load)."""

    def __init__(self, what: str, extra: str, reason: str | None = None) -> None:
        self.what = what
        self.extra = extra
        install = f"pip install 'plastron[{extra}]'"
        if reason is None:
            message = f"{what} needs the [{extra}] extra: {install}"
        else:
            message = f"{what} needs the [{extra}] extra, which does not load ({reason}): {install}"
        super().__init__(message)


def require_extra(extra: str, what: str) -> None:
    """Import the modules of ``extra``; raise :class:`MissingExtra` naming ``what`` (e.g.
    ``KeyManager "pkcs11"``) when one is not installed or fails to load."""
    try:
        modules = EXTRA_MODULES[extra]
    except KeyError:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(EXTRA_MODULES)}") from None
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                raise MissingExtra(what, extra) from None
            raise MissingExtra(what, extra, " ".join(str(exc).split())) from None
        except (ImportError, OSError) as exc:
            # installed but broken, e.g. tpm2-pytss without the libtss2 shared libraries
            raise MissingExtra(what, extra, " ".join(str(exc).split())) from None
