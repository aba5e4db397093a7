"""``agent_path_template``: the safe subset of Go text/template every attestation method uses to
build its agent ID path.

SPIRE renders agent paths with Go's text/template (plus sprig functions). Plastron accepts
literal text and ``{{ .Field }}`` substitutions only — no pipelines, functions, trim markers or
comments. Each method declares its fields in a :class:`TemplateSchema`: plain fields
(``.PluginName``), fixed dotted paths (``.Subject.CommonName``) and maps whose key is chosen in
the template (``.Tags.<key>``). An unknown field or any other construct is a ConfigError when
the config is read.

Values come from attested data, which an attacker may partly choose (an EC2 tag, a certificate
CN), so the rendered text is never normalised and must be a canonical agent path on its own:

- a value must fill exactly one path segment: one holding ``/`` is refused here (SPIRE would
  let ``a/b`` + ``c`` and ``a`` + ``b/c`` collide); only a schema's ``path_fields``, themselves
  cut from an already-parsed SPIFFE ID, may span segments;
- the result is ``spiffe://<td>/spire/agent`` + the rendered text, parsed strictly: empty, ``.``
  or ``..`` segments, ``%`` escapes and any character outside ``[A-Za-z0-9._-]`` fail the
  attestation (the CVE-2021-27099 class: a crafted value must not choose an arbitrary or
  reserved ID). The ``/spire/agent`` prefix keeps every result inside the agent namespace.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from plastron.errors import AttestationFailed, ConfigError, InvalidSpiffeId
from plastron.spiffe.ids import SpiffeId, TrustDomain

MAX_TEMPLATE_LENGTH = 1024
FieldPath = tuple[str, ...]
_ACTION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_SEGMENT = re.compile(r"[A-Za-z0-9._-]{1,255}")
_FIELD_PATH = re.compile(r"\.[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


class TemplateValues(Protocol):
    """What one attestation offers a template: the value of each field path the schema allows.
    A map key the attested data lacks raises AttestationFailed naming it (SPIRE parses with
    ``missingkey=error``)."""

    def lookup(self, path: FieldPath) -> str: ...


@dataclass(frozen=True)
class TemplateSchema:
    """The fields one method's templates may reference."""

    method: str
    fields: frozenset[FieldPath]
    maps: frozenset[str] = frozenset()
    path_fields: frozenset[FieldPath] = frozenset()

    def check(self, path: FieldPath, action: str) -> None:
        if path in self.fields or (len(path) == 2 and path[0] in self.maps):
            return
        raise ConfigError(
            f"agent_path_template: unknown field {action!r}; Plastron's {self.method} "
            f"supports {self.known()}"
        )

    def known(self) -> str:
        names = sorted("." + ".".join(p) for p in self.fields)
        return ", ".join(names + [f".{m}.<key>" for m in sorted(self.maps)])


@dataclass(frozen=True)
class PathTemplate:
    """A parsed template: literal strings and field paths, in order."""

    text: str
    parts: tuple[str | FieldPath, ...]
    schema: TemplateSchema

    @classmethod
    def parse(cls, text: str, schema: TemplateSchema) -> PathTemplate:
        if not isinstance(text, str) or not text:
            raise ConfigError("agent_path_template must be a non-empty string")
        if len(text) > MAX_TEMPLATE_LENGTH:
            raise ConfigError(
                f"agent_path_template is longer than {MAX_TEMPLATE_LENGTH} characters"
            )
        parts: list[str | FieldPath] = []
        pos = 0
        for match in _ACTION.finditer(text):
            parts.append(_literal(text[pos : match.start()], text))
            parts.append(_action(match.group(1), schema))
            pos = match.end()
        parts.append(_literal(text[pos:], text))
        return cls(text, tuple(p for p in parts if p != ""), schema)

    def uses_map(self, name: str) -> bool:
        """Whether the template references ``.<name>.<key>`` (e.g. whether tags are needed)."""
        return any(not isinstance(p, str) and p[0] == name for p in self.parts)

    def render(self, values: TemplateValues) -> str:
        return "".join(p if isinstance(p, str) else self._one_value(p, values) for p in self.parts)

    def _one_value(self, path: FieldPath, values: TemplateValues) -> str:
        value = values.lookup(path)
        if "/" in value and path not in self.schema.path_fields:
            raise AttestationFailed(
                f"{self.schema.method}: agent_path_template field .{'.'.join(path)} is "
                f"{value[:200]!r}, which holds '/'; an attested value must fill exactly one "
                "path segment"
            )
        return value

    def agent_id(self, td: TrustDomain, values: TemplateValues) -> SpiffeId:
        """``spiffe://<td>/spire/agent`` + the rendered path, parsed strictly; AttestationFailed
        naming the template and what it rendered otherwise."""
        rendered = self.render(values)
        try:
            return agent_path(td, rendered)
        except InvalidSpiffeId as exc:
            raise AttestationFailed(
                f"{self.schema.method}: agent_path_template {self.text!r} rendered "
                f"{rendered[:200]!r}, which is not a canonical agent ID path: {exc}"
            ) from None

    def check_shape(self) -> None:
        """Render with plain sample values so a template that can never give a valid ID is
        refused at start rather than at every attestation."""
        try:
            agent_path(TrustDomain("example.org"), self.render(_SampleValues()))
        except InvalidSpiffeId as exc:
            raise ConfigError(
                f"agent_path_template {self.text!r} cannot produce a valid agent ID: {exc}"
            ) from None


@dataclass(frozen=True)
class MappingValues:
    """Template values held in plain mappings: fixed paths, and maps by name. A missing map
    key fails the attestation with ``missing`` (``{method}``, ``{map}`` and ``{key}`` filled)."""

    method: str
    fields: Mapping[FieldPath, str]
    maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    missing: str = "{method}: agent_path_template references .{map}.{key}, which is not set"

    def lookup(self, path: FieldPath) -> str:
        if path in self.fields:
            return self.fields[path]
        name, key = path
        values = self.maps.get(name, {})
        if key not in values:
            raise AttestationFailed(self.missing.format(method=self.method, map=name, key=key))
        return values[key]


def is_canonical_segment(value: str) -> bool:
    """Whether ``value`` can stand alone as one segment of an agent ID path (a cluster name, a
    node UID, a role name): ``[A-Za-z0-9._-]``, not ``.`` or ``..``."""
    return bool(_SEGMENT.fullmatch(value)) and value not in (".", "..")


def agent_path(td: TrustDomain, rendered: str) -> SpiffeId:
    """``spiffe://<td>/spire/agent`` + ``rendered``, which must itself be a path (as SPIRE's
    idutil.AgentID); nothing is normalised."""
    if not rendered.startswith("/"):
        raise InvalidSpiffeId(f"agent path {rendered[:200]!r} must start with '/'")
    return SpiffeId(td, "/spire/agent" + rendered)


class _SampleValues:
    def lookup(self, path: FieldPath) -> str:
        return "a"


def _literal(chunk: str, whole: str) -> str:
    if "{{" in chunk or "}}" in chunk:
        raise ConfigError(f"agent_path_template {whole!r}: unbalanced '{{{{' or '}}}}'")
    return chunk


def _action(inner: str, schema: TemplateSchema) -> FieldPath:
    if inner.startswith("-") or inner.endswith("-"):
        raise ConfigError(f"agent_path_template: trim markers are not supported ({{{{{inner}}}}})")
    action = inner.strip(" ")
    if not _FIELD_PATH.fullmatch(action):
        raise ConfigError(
            f"agent_path_template: only {{{{ .Field }}}} substitutions are supported, "
            f"not {{{{{inner}}}}}"
        )
    path = tuple(action[1:].split("."))
    schema.check(path, action)
    return path
