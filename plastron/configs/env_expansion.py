"""``-expandEnv``: ``$VAR`` and ``${VAR}`` replaced before parsing, as Go's os.ExpandEnv does.

Unset variables expand to the empty string. Edge cases follow Go: ``$`` not followed by a name
stays literal, ``${}`` and an unterminated ``${`` are dropped ("invalid syntax, eat the
characters"), and ``$1``/``$*``-style special names look up that one-character variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

_SPECIAL = frozenset("*#$@!?-0123456789")


def _is_name_char(ch: str) -> bool:
    return ch == "_" or (ch.isascii() and ch.isalnum())


def _shell_name(rest: str) -> tuple[str, int]:
    """The variable name after a ``$`` and how many characters it spans (Go's getShellName)."""
    if rest.startswith("{"):
        if len(rest) > 2 and rest[1] in _SPECIAL and rest[2] == "}":
            return rest[1], 3
        close = rest.find("}", 1)
        if close < 0:
            return "", 1
        if close == 1:
            return "", 2
        return rest[1:close], close + 1
    if rest and rest[0] in _SPECIAL:
        return rest[0], 1
    width = 0
    while width < len(rest) and _is_name_char(rest[width]):
        width += 1
    return rest[:width], width


def expand_env(text: str, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    out: list[str] = []
    i = 0
    while True:
        j = text.find("$", i)
        if j < 0 or j + 1 >= len(text):
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        name, width = _shell_name(text[j + 1 :])
        if name:
            out.append(env.get(name, ""))
        elif width == 0:
            out.append("$")
        i = j + 1 + width
