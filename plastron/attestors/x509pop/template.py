"""The x509pop ``agent_path_template`` fields (the engine is :mod:`plastron.attestors.template`).

``.PluginName`` (``x509pop``), ``.Fingerprint`` (SHA-1 hex of the leaf DER), ``.TrustDomain``,
``.SerialNumberHex`` (lowercase, even length), ``.SVIDPathTrimmed`` (spiffe mode; the one field
that may span segments: it is cut from a parsed SPIFFE ID), ``.Subject.CommonName``,
``.URISanSelectors.<key>``. A ``.URISanSelectors`` key the certificate lacks fails the
attestation (SPIRE parses with ``missingkey=error``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from plastron.attestors.template import FieldPath, PathTemplate, TemplateSchema
from plastron.errors import AttestationFailed

SCHEMA = TemplateSchema(
    method="x509pop",
    fields=frozenset(
        {
            ("PluginName",),
            ("Fingerprint",),
            ("TrustDomain",),
            ("SerialNumberHex",),
            ("SVIDPathTrimmed",),
            ("Subject", "CommonName"),
        }
    ),
    maps=frozenset({"URISanSelectors"}),
    path_fields=frozenset({("SVIDPathTrimmed",)}),
)


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

    def lookup(self, path: FieldPath) -> str:
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


def parse(text: str) -> PathTemplate:
    return PathTemplate.parse(text, SCHEMA)


DEFAULT_EXTERNAL_PKI = parse("/{{ .PluginName }}/{{ .Fingerprint }}")
DEFAULT_SPIFFE = parse("/{{ .PluginName }}/{{ .SVIDPathTrimmed }}")
