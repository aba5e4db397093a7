"""A config file as text, then as one :class:`~plastron.configs.block.Block`: SPIRE's HCL1, or
JSON (HCL-JSON included), with SPIRE's ``-expandEnv``.

Every failure, whatever the input, is a :class:`~plastron.errors.ConfigError`; the runtimes'
config modules (``plastron.server.config``, ``plastron.agent.config``) read their sections
from the Block this returns.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from hcl.parser import HclParser

from plastron.configs.block import Block
from plastron.configs.env_expansion import expand_env as _expand_env
from plastron.errors import ConfigError
from plastron.strict_json import no_duplicate_keys

MAX_CONFIG_BYTES = 1024 * 1024

_reject_duplicate_keys = no_duplicate_keys(lambda key: ConfigError(f'key "{key}" is given twice'))
_HCL_LOCK = threading.Lock()


@cache
def _hcl_parser() -> Any:
    # pyhcl's hcl.loads rebuilds its LALR tables on every call (~25 ms); the parser object
    # keeps no state between parses (a fresh lexer each time), so one is built and reused.
    return HclParser()


def _parse_hcl(text: str) -> Any:
    with _HCL_LOCK:
        return _hcl_parser().parse(text)


def parse_document(text: str, expand_env: bool, environ: Mapping[str, str] | None) -> Block:
    """The top-level Block of a config text; ``expand_env`` is SPIRE's ``-expandEnv``."""
    if not isinstance(text, str):
        raise ConfigError("configuration must be text")
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"configuration is larger than {MAX_CONFIG_BYTES} bytes")
    if expand_env:
        text = _expand_env(text, environ)
        if len(text) > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"configuration is larger than {MAX_CONFIG_BYTES} bytes after -expandEnv"
            )
    try:
        if text.lstrip().startswith("{"):
            doc = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
        else:
            doc = _parse_hcl(text)
    except ConfigError:
        raise
    except Exception as exc:  # pyhcl/ply raise assorted types; untrusted text -> ConfigError
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ConfigError(f"cannot parse configuration: {detail}") from None
    if not isinstance(doc, dict):
        raise ConfigError("configuration must be a set of blocks (server {...} plugins {...})")
    return Block(doc)


def read_config_file(path: Path) -> str:
    """The text of a config file, bounded in size and UTF-8."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {str(path)!r} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text") from None
