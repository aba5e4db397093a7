"""A typed, path-aware reader over one parsed config block.

pyhcl (and JSON) hand us plain dicts, lists and scalars. A :class:`Block` takes values out one
key at a time with the type the config schema expects, naming the key's dotted path in every
error; :meth:`Block.finish` then rejects whatever key nobody asked for, so a typo such as
``trust_domian`` is an error, not a silently ignored setting.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from plastron.configs.duration import parse_duration
from plastron.errors import ConfigError, InvalidArgument
from plastron.keymanager import KeyType
from plastron.spiffe.ids import SpiffeId, TrustDomain

# Longest string value any core setting may take (paths, addresses, URLs).
MAX_STRING = 4096
_MISSING: Any = object()


def join_path(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def as_mapping(value: object, where: str) -> dict[str, Any]:
    """One block's body. pyhcl gives a dict; repeating a block yields a list of dicts, and
    HCL-JSON writes every block as a one-element list: accept one, refuse repeats."""
    if isinstance(value, list):
        if len(value) != 1:
            raise ConfigError(f'block "{where}" is given {len(value)} times; give it once')
        value = value[0]
    if not isinstance(value, dict):
        raise ConfigError(f'"{where}" must be a block ({{ ... }})')
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(f'"{where}" has a non-string key')
    return value


class Block:
    def __init__(self, data: object, path: str = "") -> None:
        self.path = path
        self._data = as_mapping(data, path or "<top level>")
        self._used: set[str] = set()
        self._sources: dict[str, str] = {}

    def where(self, key: str) -> str:
        """How errors name ``key``: its dotted path, or the flag that set it."""
        return self._sources.get(key) or join_path(self.path, key)

    def override(self, key: str, value: Any, source: str) -> None:
        """Set ``key`` from ``source`` (a command-line flag), over the file's value."""
        self._data[key] = value
        self._sources[key] = source

    def has(self, key: str) -> bool:
        return key in self._data

    def keys(self) -> list[str]:
        return list(self._data)

    def _take(self, key: str) -> Any:
        self._used.add(key)
        return self._data.get(key, _MISSING)

    def raw(self, key: str, default: Any = None) -> Any:
        value = self._take(key)
        return default if value is _MISSING else value

    def block(self, key: str) -> Block:
        value = self._take(key)
        return Block({} if value is _MISSING else value, self.where(key))

    def mapping(self, key: str) -> dict[str, Any]:
        """A block kept as plain data (federation, telemetry, plugin_data)."""
        value = self._take(key)
        return {} if value is _MISSING else as_mapping(value, self.where(key))

    def string(self, key: str, default: Any = _MISSING) -> Any:
        value = self._take(key)
        if value is _MISSING:
            if default is _MISSING:
                raise ConfigError(f"{self.where(key)} is required")
            return default
        if not isinstance(value, str):
            raise ConfigError(f"{self.where(key)} must be a string")
        if len(value) > MAX_STRING:
            raise ConfigError(f"{self.where(key)} is longer than {MAX_STRING} characters")
        return value

    def optional_string(self, key: str) -> str | None:
        """A non-empty string, or None when the key is absent."""
        value: str | None = self.string(key, None)
        if value is not None and not value:
            raise ConfigError(f"{self.where(key)} must be a non-empty string")
        return value

    def choice(self, key: str, default: str, allowed: tuple[str, ...]) -> str:
        value: str = self.string(key, default)
        if value.lower() not in allowed:
            raise ConfigError(f"{self.where(key)} must be one of {', '.join(allowed)} ({value!r})")
        return value.lower()

    def integer(self, key: str, default: int, lo: int = 0, hi: int = 2**31 - 1) -> int:
        """An integer within [lo, hi]; quoted digits are accepted, as Go's HCL decoder does."""
        value = self._take(key)
        if value is _MISSING:
            return default
        # SPIRE's sample configs quote numbers (bind_port = "8081"); Go's HCL decoder accepts it.
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 12:
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.where(key)} must be an integer")
        if not lo <= value <= hi:
            raise ConfigError(f"{self.where(key)} must be between {lo} and {hi} ({value})")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._take(key)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"{self.where(key)} must be true or false")
        return value

    def duration(self, key: str, default: dt.timedelta, *, positive: bool = True) -> dt.timedelta:
        value = self._take(key)
        if value is _MISSING:
            return default
        result = parse_duration(value, self.where(key))
        if positive and not result:
            raise ConfigError(f"{self.where(key)} must be longer than zero")
        return result

    def string_list(self, key: str, max_items: int = 1024) -> tuple[str, ...]:
        value = self._take(key)
        if value is _MISSING:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{self.where(key)} must be a list of strings")
        if len(value) > max_items:
            raise ConfigError(f"{self.where(key)} has more than {max_items} items")
        if any(len(v) > MAX_STRING for v in value):
            raise ConfigError(f"{self.where(key)} has an item longer than {MAX_STRING} characters")
        return tuple(value)

    def key_type(self, key: str, default: KeyType) -> KeyType:
        text: str = self.string(key, default.value)
        try:
            return KeyType.parse(text)
        except ConfigError as exc:
            raise ConfigError(f"{self.where(key)}: {exc}") from None

    def trust_domain(self, key: str) -> TrustDomain:
        text: str = self.string(key)
        try:
            return TrustDomain.parse(text)
        except InvalidArgument as exc:
            raise ConfigError(f"{self.where(key)} is not a valid trust domain: {exc}") from None

    def spiffe_ids(self, key: str) -> tuple[SpiffeId, ...]:
        out = []
        for text in self.string_list(key):
            try:
                out.append(SpiffeId.parse(text))
            except InvalidArgument as exc:
                raise ConfigError(f"{self.where(key)}: {exc}") from None
        return tuple(out)

    def finish(self) -> None:
        """Reject every key that was not read."""
        unknown = [k for k in self._data if k not in self._used]
        if unknown:
            raise ConfigError(f'unknown key "{self.where(sorted(unknown)[0])}"')


def frozen_copy(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only view for raw blocks kept on frozen config objects."""
    return MappingProxyType(dict(data))
