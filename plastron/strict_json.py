"""Strict JSON for untrusted input: objects that may not repeat a key (``json`` would silently
keep the last one), and a bounded loader that turns every way a document can be malformed into
the caller's own error, never an unexpected exception."""

from __future__ import annotations

import json
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


class _NotJson(Exception):
    """A constant JSON does not allow (``NaN``, ``Infinity``, ``-Infinity``)."""


def _refuse_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON value")


def load_untrusted_object(
    data: bytes,
    *,
    limit: int,
    what: str,
    error: Callable[[str], Exception],
) -> dict[str, Any]:
    """Parse ``data`` as one JSON object of at most ``limit`` bytes, refusing duplicate keys.

    Every malformed input raises ``error(message)``: oversize, not UTF-8, not JSON, nesting
    deep enough to exhaust the parser's recursion (``RecursionError``), integers longer than
    Python converts (``ValueError``), ``NaN``/``Infinity``, or a top level that is not an object.
    The message names ``what`` and the rule, never the content.
    """
    if len(data) > limit:
        raise error(f"{what} is {len(data)} bytes; at most {limit} allowed")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{what} is not valid JSON (not UTF-8)") from None
    hook = no_duplicate_keys(lambda key: error(f"{what} has a duplicate JSON key {key[:64]!r}"))
    try:
        value = json.loads(text, object_pairs_hook=hook, parse_constant=_refuse_constant)
    except RecursionError:
        raise error(f"{what} is not valid JSON (nested too deeply)") from None
    except _NotJson as exc:
        raise error(f"{what} is not valid JSON ({exc})") from None
    except ValueError as exc:  # JSONDecodeError, and integers beyond the digit limit
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "number too large"
        raise error(f"{what} is not valid JSON ({reason})") from None
    if not isinstance(value, dict):
        raise error(f"{what} must be a JSON object")
    return value
