"""Secrets in plugin_data (an HSM PIN, a token) come by reference: ``<name>_env`` names an
environment variable, ``<name>_file`` a file. The inline form ``<name> = "..."`` is refused
unless a caller explicitly allows it, so secrets do not end up in config files and backups.
Error messages name the setting, never the secret.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from plastron.errors import ConfigError

MAX_SECRET_BYTES = 64 * 1024


def _read_secret_file(path_text: str, where: str) -> str:
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(Path(path_text), flags)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path_text!r}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"{where}: {path_text!r} is not a regular file")
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(MAX_SECRET_BYTES + 1)
    if len(data) > MAX_SECRET_BYTES:
        raise ConfigError(f"{where}: {path_text!r} is larger than {MAX_SECRET_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: {path_text!r} is not UTF-8 text") from None
    # Files written by editors and `echo` end in a newline that is not part of the secret.
    return text.removesuffix("\n").removesuffix("\r")


def resolve_secret(
    plugin_data: Mapping[str, Any],
    name: str,
    *,
    allow_inline: bool = False,
    environ: Mapping[str, str] | None = None,
    where: str = "plugin_data",
) -> str:
    """The secret ``name`` from exactly one of ``<name>_env``, ``<name>_file`` (or, when
    ``allow_inline``, ``<name>``). ConfigError when none, several, or an empty one is given."""
    env = os.environ if environ is None else environ
    given = [k for k in (name, f"{name}_env", f"{name}_file") if k in plugin_data]
    if not given:
        raise ConfigError(f"{where}: {name} is required: set {name}_env or {name}_file")
    if len(given) > 1:
        raise ConfigError(f"{where}: give only one of {', '.join(given)}")
    key = given[0]
    ref = plugin_data[key]
    if not isinstance(ref, str) or not ref:
        raise ConfigError(f"{where}.{key} must be a non-empty string")
    if key == name:
        if not allow_inline:
            raise ConfigError(
                f"{where}.{name}: an inline secret is refused; put it in an environment"
                f" variable named by {name}_env or a file named by {name}_file"
            )
        return ref
    if key.endswith("_env"):
        value = env.get(ref)
        if not value:
            raise ConfigError(f"{where}.{key}: environment variable {ref!r} is not set or empty")
        return value
    value = _read_secret_file(ref, f"{where}.{key}")
    if not value:
        raise ConfigError(f"{where}.{key}: {ref!r} is empty")
    return value
