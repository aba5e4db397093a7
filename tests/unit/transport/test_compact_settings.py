"""The server's HTTP/2 settings kept in lists: the same values, changes and refusals as h2's."""

from __future__ import annotations

import tracemalloc

import pytest
from h2.exceptions import InvalidSettingsValueError
from h2.settings import SettingCodes, Settings

from plastron.transport.h2_settings import CompactSettings


def _values(settings: Settings) -> tuple[object, ...]:
    # get(): a setting sent but not yet acknowledged reads as absent (h2 raises KeyError).
    return tuple(settings.get(code) for code in SettingCodes)


def _cycle(settings: Settings) -> list[tuple[object, ...]]:
    """Values before, a change sent, values before its acknowledgement, what it changed."""
    seen: list[tuple[object, ...]] = [_values(settings)]
    settings[SettingCodes.MAX_CONCURRENT_STREAMS] = 100  # a setting not there before
    settings[SettingCodes.INITIAL_WINDOW_SIZE] = 1 << 20
    settings[SettingCodes.INITIAL_WINDOW_SIZE] = 1 << 19  # two outstanding values
    seen.append(_values(settings))
    changed = settings.acknowledge()
    seen.append(tuple(sorted((k, c.original_value, c.new_value) for k, c in changed.items())))
    seen.append(_values(settings))
    seen.append(tuple(sorted((k, c.new_value) for k, c in settings.acknowledge().items())))
    return seen


@pytest.mark.parametrize("client", [True, False])
def test_compact_settings_change_as_h2s_do(client: bool) -> None:
    initial = {SettingCodes.MAX_HEADER_LIST_SIZE: 65536}
    assert _cycle(CompactSettings(client, initial)) == _cycle(Settings(client, initial))


def test_compact_settings_refuse_what_h2_refuses() -> None:
    settings = CompactSettings(client=False)
    with pytest.raises(InvalidSettingsValueError):
        settings[SettingCodes.INITIAL_WINDOW_SIZE] = 1 << 31
    with pytest.raises(InvalidSettingsValueError):
        CompactSettings(client=False, initial_values={SettingCodes.MAX_FRAME_SIZE: 1})


def _bytes_for(make: type[Settings]) -> int:
    tracemalloc.start()
    try:
        held = [make(client=True) for _ in range(100)]
        for settings in held:
            settings[SettingCodes.MAX_CONCURRENT_STREAMS] = 100
            settings.acknowledge()
        return tracemalloc.get_traced_memory()[0] // len(held)
    finally:
        tracemalloc.stop()


def test_compact_settings_take_a_fraction_of_h2s_memory() -> None:
    assert _bytes_for(CompactSettings) * 3 < _bytes_for(Settings)
