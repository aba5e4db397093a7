"""The x509pop ``agent_path_template``: a safe subset of Go text/template.

SPIRE renders the agent path with Go's text/template (plus sprig functions). Plastron accepts
literal text and ``{{ .Field }}`` substitutions only — no pipelines, functions, trim markers or
comments — with these fields:

``.PluginName`` (``x509pop``), ``.Fingerprint`` (SHA-1 hex of the leaf DER), ``.TrustDomain``,
``.SerialNumberHex`` (lowercase, even length), ``.SVIDPathTrimmed`` (spiffe mode),
``.Subject.CommonName``, ``.URISanSelectors.<key>``.

An unknown field or any other construct is a ConfigError when the config is read. A
``.URISanSelectors`` key the certificate lacks fails the attestation (SPIRE parses with
``missingkey=error``). The rendered text is never normalised: the caller parses the agent ID
strictly, so a value that is not a canonical path segment fails attestation; a value holding
``/`` (which would parse, as several segments) is refused here, unlike SPIRE. Only
``.SVIDPathTrimmed``, itself cut from a parsed SPIFFE ID, may span segments.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from plastron.errors import AttestationFailed, ConfigError

MAX_TEMPLATE_LENGTH = 1024
SIMPLE_FIELDS = frozenset(
    {"PluginName", "Fingerprint", "TrustDomain", "SerialNumberHex", "SVIDPathTrimmed"}
)
_ACTION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_FIELD_PATH = re.compile(r"\.[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True)
class TemplateValues:
    """What a template can reference, for one certificate."""

    fingerprint: str
    trust_domain: str
    serial_number_hex: str
    common_name: str = ""
    svid_path_trimmed: str = ""
    uri_san_selectors: Mapping[str, str] = field(default_factory=dict)
    plugin_name: str = "x509pop"

    def lookup(self, path: tuple[str, ...]) -> str:
        simple = {
            "PluginName": self.plugin_name,
            "Fingerprint": self.fingerprint,
            "TrustDomain": self.trust_domain,
            "SerialNumberHex": self.serial_number_hex,
            "SVIDPathTrimmed": self.svid_path_trimmed,
        }
        if len(path) == 1:
            return simple[path[0]]
        if path == ("Subject", "CommonName"):
            return self.common_name
        key = path[1]
        if key not in self.uri_san_selectors:
            raise AttestationFailed(
                f"x509pop: agent_path_template references .URISanSelectors.{key} but the "
                f"certificate has no x509pop URI SAN with key {key!r}"
            )
        return self.uri_san_selectors[key]


def _check_field(path: tuple[str, ...], action: str) -> None:
    if len(path) == 1 and path[0] in SIMPLE_FIELDS:
        return
    if path == ("Subject", "CommonName"):
        return
    if len(path) == 2 and path[0] == "URISanSelectors":
        return
    known = ", ".join(
        [f".{f}" for f in sorted(SIMPLE_FIELDS)] + [".Subject.CommonName", ".URISanSelectors.<key>"]
    )
    raise ConfigError(f"agent_path_template: unknown field {action!r}; Plastron supports {known}")


@dataclass(frozen=True)
class PathTemplate:
    """A parsed template: literal strings and field paths, in order."""

    text: str
    parts: tuple[str | tuple[str, ...], ...]

    @classmethod
    def parse(cls, text: str) -> PathTemplate:
        if not isinstance(text, str) or not text:
            raise ConfigError("agent_path_template must be a non-empty string")
        if len(text) > MAX_TEMPLATE_LENGTH:
            raise ConfigError(
                f"agent_path_template is longer than {MAX_TEMPLATE_LENGTH} characters"
            )
        parts: list[str | tuple[str, ...]] = []
        pos = 0
        for match in _ACTION.finditer(text):
            parts.append(_literal(text[pos : match.start()], text))
            parts.append(_action(match.group(1)))
            pos = match.end()
        parts.append(_literal(text[pos:], text))
        return cls(text, tuple(p for p in parts if p != ""))

    def render(self, values: TemplateValues) -> str:
        return "".join(p if isinstance(p, str) else _one_segment(p, values) for p in self.parts)


# The one field whose value is a path by design: it comes from an already-parsed SPIFFE ID.
_PATH_FIELDS = frozenset({("SVIDPathTrimmed",)})


def _one_segment(path: tuple[str, ...], values: TemplateValues) -> str:
    """A field's value, which must not add path segments: a CN or SAN value holding '/' would
    let a certificate choose where its ID lands (``a/b`` + ``c`` and ``a`` + ``b/c`` collide)."""
    value = values.lookup(path)
    if "/" in value and path not in _PATH_FIELDS:
        raise AttestationFailed(
            f"x509pop: agent_path_template field .{'.'.join(path)} is {value[:200]!r}, which "
            "holds '/'; a certificate value must fill exactly one path segment"
        )
    return value


def _literal(chunk: str, whole: str) -> str:
    if "{{" in chunk or "}}" in chunk:
        raise ConfigError(f"agent_path_template {whole!r}: unbalanced '{{{{' or '}}}}'")
    return chunk


def _action(inner: str) -> tuple[str, ...]:
    if inner.startswith("-") or inner.endswith("-"):
        raise ConfigError(f"agent_path_template: trim markers are not supported ({{{{{inner}}}}})")
    action = inner.strip(" ")
    if not _FIELD_PATH.fullmatch(action):
        raise ConfigError(
            f"agent_path_template: only {{{{ .Field }}}} substitutions are supported, "
            f"not {{{{{inner}}}}}"
        )
    path = tuple(action[1:].split("."))
    _check_field(path, action)
    return path


DEFAULT_EXTERNAL_PKI = PathTemplate.parse("/{{ .PluginName }}/{{ .Fingerprint }}")
DEFAULT_SPIFFE = PathTemplate.parse("/{{ .PluginName }}/{{ .SVIDPathTrimmed }}")
