"""JSON objects that may not repeat a key (``json`` would silently keep the last one)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ObjectHook = Callable[[list[tuple[str, Any]]], dict[str, Any]]


def no_duplicate_keys(error: Callable[[str], Exception]) -> ObjectHook:
    """An ``object_pairs_hook`` that raises ``error(key)`` for a key given twice."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise error(key)
            out[key] = value
        return out

    return hook
