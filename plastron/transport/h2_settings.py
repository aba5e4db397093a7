"""h2's ``Settings`` with each setting's values in a list (the server's connections use it)."""

from __future__ import annotations

from typing import Any

from h2.settings import SettingCodes, Settings


class _SettingValues(list[Any]):
    """One HTTP/2 setting's current value, then values sent or received but not yet
    acknowledged: h2 keeps these in a ``deque``, which allocates a 64-slot block even when
    it holds one value (about 600 bytes; 2 x 8 settings, about 10 KiB per connection)."""

    def popleft(self) -> Any:
        return self.pop(0)


class CompactSettings(Settings):
    """h2's Settings, each setting's values in a :class:`_SettingValues` instead of a deque."""

    def __init__(self, client: bool = True, initial_values: dict[Any, int] | None = None) -> None:
        super().__init__(client, initial_values)
        compact = {key: _SettingValues(values) for key, values in self._settings.items()}
        self._settings = compact  # type: ignore[assignment]  # the deque's methods h2 calls

    def __setitem__(self, key: SettingCodes | int, value: int) -> None:
        if key not in self._settings:  # h2 would start a deque here
            self._settings[key] = _SettingValues([None])  # type: ignore[assignment]
        super().__setitem__(key, value)
