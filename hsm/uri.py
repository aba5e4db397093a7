"""RFC 7512 ``pkcs11:`` URIs, limited to what a KeyManager needs.

Path attributes select the token (``token``, ``serial``, ``slot-id``) and name the key-label
prefix (``object``); query attributes name the module (``module-path``) and where the PIN
comes from (``pin-source=file:/path`` or ``pin-source=env:NAME``). ``pin-value`` is refused:
a PIN written into a URI ends up in config files, shell history and logs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from plastron.errors import ConfigError

MAX_URI_LENGTH = 4096
_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")
PATH_ATTRIBUTES = frozenset({"token", "serial", "slot-id", "object", "type"})
QUERY_ATTRIBUTES = frozenset({"module-path", "pin-source"})


@dataclass(frozen=True)
class Pkcs11Uri:
    """The parts of a ``pkcs11:`` URI that Plastron uses; absent parts are None."""

    module_path: str | None = None
    token_label: str | None = None
    token_serial: str | None = None
    slot_id: int | None = None
    object_label: str | None = None
    pin_file: str | None = None
    pin_env: str | None = None


def _unquote(name: str, raw: str) -> str:
    """Percent-decode one attribute value (RFC 7512 §2.3); malformed escapes are refused."""
    if _PCT.search(raw):
        raise ConfigError(f"pkcs11 URI: attribute {name!r} has a malformed percent-escape")
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == "%":
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out += raw[i].encode()
            i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"pkcs11 URI: attribute {name!r} is not valid UTF-8") from None


def _split(part: str, sep: str, allowed: frozenset[str], where: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    if not part:
        return attrs
    for item in part.split(sep):
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise ConfigError(f"pkcs11 URI: {where} attribute {item!r} is not name=value")
        if name == "pin-value":
            raise ConfigError(
                "pkcs11 URI: pin-value is not accepted; use pin-source=file:<path> or "
                "pin-source=env:<NAME> so the PIN stays out of config"
            )
        if name not in allowed:
            known = ", ".join(sorted(allowed))
            raise ConfigError(f"pkcs11 URI: unknown {where} attribute {name!r} (known: {known})")
        if name in attrs:
            raise ConfigError(f"pkcs11 URI: attribute {name!r} appears twice")
        attrs[name] = _unquote(name, value)
    return attrs


def _pin_source(value: str) -> tuple[str | None, str | None]:
    """Map ``pin-source`` to (file, env). RFC 7512 defines it as a URI; we take file: and env:."""
    if value.startswith("file:"):
        path = value.removeprefix("file:")
        # RFC 8089 allows file:///abs and file:/abs; keep only the path
        if path.startswith("//"):
            path = path[2:]
        if not path.startswith("/"):
            raise ConfigError(f"pkcs11 URI: pin-source {value!r} must be an absolute file: path")
        return path, None
    if value.startswith("env:"):
        name = value.removeprefix("env:")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ConfigError(f"pkcs11 URI: pin-source {value!r} names an invalid variable")
        return None, name
    if value.startswith("/"):
        return value, None
    raise ConfigError(f"pkcs11 URI: pin-source {value!r} must be file:<path> or env:<NAME>")


def parse_pkcs11_uri(uri: str) -> Pkcs11Uri:
    """Parse ``pkcs11:path-attrs?query-attrs``; reject unknown attributes by name."""
    if len(uri) > MAX_URI_LENGTH:
        raise ConfigError(f"pkcs11 URI is longer than {MAX_URI_LENGTH} characters")
    if not uri.startswith("pkcs11:"):
        raise ConfigError("pkcs11 URI must start with 'pkcs11:'")
    body = uri.removeprefix("pkcs11:")
    if "#" in body:
        raise ConfigError("pkcs11 URI must not contain a fragment ('#')")
    path_part, _, query_part = body.partition("?")
    path = _split(path_part, ";", PATH_ATTRIBUTES, "path")
    query = _split(query_part, "&", QUERY_ATTRIBUTES, "query")
    if "type" in path and path["type"] != "private":
        raise ConfigError(f"pkcs11 URI: type={path['type']!r} is not supported; use type=private")
    slot_id: int | None = None
    if "slot-id" in path:
        if not path["slot-id"].isdigit() or len(path["slot-id"]) > 20:
            raise ConfigError(f"pkcs11 URI: slot-id {path['slot-id']!r} is not a decimal number")
        slot_id = int(path["slot-id"])
    pin_file = pin_env = None
    if "pin-source" in query:
        pin_file, pin_env = _pin_source(query["pin-source"])
    return Pkcs11Uri(
        module_path=query.get("module-path"),
        token_label=path.get("token"),
        token_serial=path.get("serial"),
        slot_id=slot_id,
        object_label=path.get("object"),
        pin_file=pin_file,
        pin_env=pin_env,
    )
