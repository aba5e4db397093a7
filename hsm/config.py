"""Configuration of the ``pkcs11`` KeyManager and where its PIN comes from.

``plugin_data`` takes either separate keys::

    module_path = "/usr/lib/softhsm/libsofthsm2.so"
    token_label = "plastron-ca"        # or slot_id = 3, or token_serial = "a1b2..."
    pin_file    = "/etc/plastron/hsm.pin"   # or pin_env = "PLASTRON_HSM_PIN"
    key_label_prefix = "plastron/"

or one RFC 7512 URI in ``uri`` (``pkcs11:token=plastron-ca;object=plastron%2F?module-path=
/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/plastron/hsm.pin``). Mixing the two forms
is refused so there is never a question which one wins.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plastron.configs.block import Block
from plastron.errors import ConfigError, KeyManagerError
from plastron.hsm.uri import parse_pkcs11_uri

MAX_PIN_BYTES = 256
MAX_PREFIX_LENGTH = 64
DEFAULT_KEY_LABEL_PREFIX = "plastron/"
_KEYS = frozenset(
    {"uri", "module_path", "token_label", "slot_id", "token_serial", "pin_env", "pin_file"}
    | {"key_label_prefix"}
)
_PREFIX_RE = re.compile(r"[A-Za-z0-9._:/-]{0,64}")


@dataclass(frozen=True)
class Pkcs11Config:
    """Where the token is and how to log in. Holds the PIN's source, never the PIN."""

    module_path: str
    token_label: str | None = None
    slot_id: int | None = None
    token_serial: str | None = None
    pin_env: str | None = None
    pin_file: str | None = None
    key_label_prefix: str = DEFAULT_KEY_LABEL_PREFIX

    def describe_token(self) -> str:
        """How the token is selected, for error messages (no secrets in it)."""
        if self.token_label is not None:
            return f"token_label={self.token_label!r}"
        if self.token_serial is not None:
            return f"token_serial={self.token_serial!r}"
        return f"slot_id={self.slot_id}"

    def describe_pin_source(self) -> str:
        return f"pin_file={self.pin_file!r}" if self.pin_file else f"pin_env={self.pin_env!r}"

    def read_pin(self) -> bytes:
        """Read the user PIN from its file or environment variable, fresh on every call."""
        if self.pin_env is not None:
            value = os.environ.get(self.pin_env)
            if value is None:
                raise KeyManagerError(f"pkcs11: environment variable {self.pin_env!r} is not set")
            pin = value.encode()
        else:
            assert self.pin_file is not None
            pin = _read_pin_file(self.pin_file)
        if not pin or len(pin) > MAX_PIN_BYTES:
            raise KeyManagerError(
                f"pkcs11: PIN from {self.describe_pin_source()} must be 1..{MAX_PIN_BYTES} bytes"
            )
        return pin


def check_token_files(config: Pkcs11Config) -> None:
    """What ``validate`` can check of a token config without loading the module or logging
    in: the module file is there, and the PIN is readable (a pin_file private to its user)."""
    if not os.path.isfile(config.module_path):
        raise ConfigError(f"pkcs11: module_path {config.module_path!r} is not a file")
    config.read_pin()


def _read_pin_file(path: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise KeyManagerError(f"pkcs11: cannot read pin_file {path!r}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise KeyManagerError(f"pkcs11: pin_file {path!r} is not a regular file")
        # a PIN other users can read or change is not a secret
        if mode & (stat.S_IROTH | stat.S_IWOTH):
            raise KeyManagerError(
                f"pkcs11: pin_file {path!r} is accessible to other users (mode {mode & 0o777:o});"
                " chmod o-rw"
            )
        data = os.read(fd, MAX_PIN_BYTES + 2)
    finally:
        os.close(fd)
    return data.rstrip(b"\r\n")


def read_pkcs11_config(settings: Block) -> Pkcs11Config:
    """The token settings (separate keys or one ``uri``) of a plugin's ``plugin_data``; the
    caller has read its own keys first, so ``finish()`` here refuses any other."""
    uri_text = settings.optional_string("uri")
    if uri_text is not None:
        others = sorted(k for k in _KEYS - {"uri"} if settings.has(k))
        if others:
            raise ConfigError(f"{settings.where('uri')} cannot be combined with {others[0]!r}")
        settings.finish()
        uri = parse_pkcs11_uri(uri_text)
        values: dict[str, Any] = {
            "module_path": uri.module_path,
            "token_label": uri.token_label,
            "token_serial": uri.token_serial,
            "slot_id": uri.slot_id,
            "pin_file": uri.pin_file,
            "pin_env": uri.pin_env,
            "key_label_prefix": uri.object_label,
        }
    else:
        values = {k: settings.optional_string(k) for k in sorted(_KEYS - {"uri", "slot_id"})}
        values["slot_id"] = (
            settings.integer("slot_id", 0, 0, 2**64 - 1) if settings.has("slot_id") else None
        )
        settings.finish()
    return _build(values)


def parse_pkcs11_config(
    plugin_data: Mapping[str, Any], where: str = "pkcs11.plugin_data"
) -> Pkcs11Config:
    """:func:`read_pkcs11_config` over a plain mapping (a URI's settings, tests)."""
    return read_pkcs11_config(Block(dict(plugin_data), where))


def _build(values: Mapping[str, Any]) -> Pkcs11Config:
    module_path = values["module_path"]
    if module_path is None:
        raise ConfigError("pkcs11: module_path is required (the vendor's PKCS#11 .so)")
    if not os.path.isabs(module_path):
        raise ConfigError(f"pkcs11: module_path {module_path!r} must be an absolute path")
    selectors = [k for k in ("token_label", "slot_id", "token_serial") if values[k] is not None]
    if len(selectors) != 1:
        raise ConfigError(
            "pkcs11: exactly one of token_label, slot_id, token_serial is required"
            f" (got {', '.join(selectors) or 'none'})"
        )
    pins = [k for k in ("pin_env", "pin_file") if values[k] is not None]
    if len(pins) != 1:
        got = ", ".join(pins) or "none"
        raise ConfigError(f"pkcs11: exactly one of pin_env, pin_file is required (got {got})")
    if values["pin_file"] is not None and not os.path.isabs(values["pin_file"]):
        raise ConfigError(f"pkcs11: pin_file {values['pin_file']!r} must be an absolute path")
    prefix = values["key_label_prefix"]
    if prefix is None:
        prefix = DEFAULT_KEY_LABEL_PREFIX
    if not _PREFIX_RE.fullmatch(prefix):
        raise ConfigError(
            f"pkcs11: key_label_prefix {prefix!r} must be at most {MAX_PREFIX_LENGTH} characters"
            " of A-Z a-z 0-9 . _ : / -"
        )
    return Pkcs11Config(
        module_path=module_path,
        token_label=values["token_label"],
        slot_id=values["slot_id"],
        token_serial=values["token_serial"],
        pin_env=values["pin_env"],
        pin_file=values["pin_file"],
        key_label_prefix=prefix,
    )
