"""Envoy SDS ``Secret`` resources for one caller, named as SPIRE's agent names them.

- a SPIFFE ID the caller has an entry for: a ``TlsCertificate`` (its X509-SVID chain and key);
  ``default_svid_name`` ("default"): the same for the caller's first entry, in the order the
  Workload API uses for its default SVID;
- a trust domain ID (``spiffe://example.org``), own or federated with by one of the caller's
  entries: a ``CertificateValidationContext`` for that bundle; ``default_bundle_name``
  ("ROOTCA"): the agent's own bundle; ``default_all_bundles_name`` ("ALL"): every bundle the
  caller gets, own and federated;
- no name at all (a wildcard request): every bundle and SVID the caller gets, by their IDs.

A validation context carries Envoy's SPIFFE certificate validator (``SPIFFECertValidatorConfig``,
one trust domain per bundle) unless the agent's ``disable_spiffe_cert_validation`` or the
node's metadata key of that name says otherwise, or the node reports an Envoy older than 1.18
(which lacks the validator); then it is a plain ``trusted_ca``, and "ALL" cannot be served.

Unlike SPIRE, every requested name is answered (SPIRE serves only one of its own trust domain,
"ROOTCA" and "ALL" per request), and a name the caller is entitled to but whose SVID or
federated bundle the agent does not hold yet is reported pending rather than refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from envoy.config.core.v3 import base_pb2, extension_pb2
from envoy.extensions.transport_sockets.tls.v3 import (
    common_pb2,
    secret_pb2,
    tls_spiffe_validator_config_pb2,
)
from google.protobuf import any_pb2

from plastron.agent.cache import Identity, WorkloadEntry, WorkloadUpdate
from plastron.agent.config import SdsConfig
from plastron.errors import FailedPrecondition, InvalidArgument
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.x509svid import X509Svid, certificates_to_pem

SECRET_TYPE_URL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"  # noqa: S105
SPIFFE_VALIDATOR = "envoy.tls.cert_validator.spiffe"
NODE_DISABLE_VALIDATOR_KEY = "disable_spiffe_cert_validation"
# Envoy opens one SDS subscription per secret; a request naming thousands is not Envoy.
MAX_RESOURCE_NAMES = 1024
_NAMES_IN_ERRORS = 10
_NAME_CHARS_IN_ERRORS = 120
# Go's strconv.ParseBool, which SPIRE applies to a string metadata value.
_GO_BOOLS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}
# What a name resolves to when it is not a Secret.
_PENDING: Any = object()
_UNKNOWN: Any = object()


def check_type_url(type_url: str) -> None:
    """An SDS request asks for Secrets: its type_url is theirs, or empty (older clients)."""
    if type_url not in ("", SECRET_TYPE_URL):
        raise InvalidArgument(
            f"type_url {type_url[:_NAME_CHARS_IN_ERRORS]!r} is not served here;"
            f" SDS serves {SECRET_TYPE_URL}"
        )


def _node_override(node: Any) -> bool | None:
    """The node metadata's ``disable_spiffe_cert_validation``, if it is a boolean SPIRE reads
    (a bool, or a string Go's ParseBool accepts); anything else is ignored, as SPIRE does."""
    if node is None or NODE_DISABLE_VALIDATOR_KEY not in node.metadata.fields:
        return None
    value = node.metadata.fields[NODE_DISABLE_VALIDATOR_KEY]
    kind = value.WhichOneof("kind")
    if kind == "bool_value":
        return bool(value.bool_value)
    if kind == "string_value":
        return _GO_BOOLS.get(value.string_value)
    return None


def why_no_spiffe_validator(config: SdsConfig, node: Any) -> str | None:
    """None when validation contexts carry the SPIFFE validator for ``node``; else why not."""
    override = _node_override(node)
    if override is True:
        return f"the node's metadata sets {NODE_DISABLE_VALIDATOR_KEY}"
    if override is None and config.disable_spiffe_cert_validation:
        return f"the agent's sds {{ {NODE_DISABLE_VALIDATOR_KEY} = true }}"
    if node is not None and node.WhichOneof("user_agent_version_type") == (
        "user_agent_build_version"
    ):
        version = node.user_agent_build_version.version
        major, minor = version.major_number, version.minor_number
        if major < 1 or (major == 1 and minor < 18):
            return f"the node runs Envoy {major}.{minor}, older than 1.18"
    return None


def _inline(data: bytes) -> Any:
    return base_pb2.DataSource(inline_bytes=data)


def tls_certificate_secret(name: str, svid: X509Svid) -> Any:
    if svid.private_key is None:
        raise FailedPrecondition(f"X509-SVID for {svid.spiffe_id} carries no private key")
    key_pem = svid.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    certificate = common_pb2.TlsCertificate(
        certificate_chain=_inline(certificates_to_pem(svid.chain)), private_key=_inline(key_pem)
    )
    return secret_pb2.Secret(name=name, tls_certificate=certificate)


def spiffe_validator_secret(name: str, bundles: Iterable[Bundle]) -> Any:
    """A validation context with Envoy's SPIFFE validator, one trust domain per bundle
    (sorted by name, as SPIRE does)."""
    validator = tls_spiffe_validator_config_pb2.SPIFFECertValidatorConfig(
        trust_domains=[
            tls_spiffe_validator_config_pb2.SPIFFECertValidatorConfig.TrustDomain(
                name=bundle.trust_domain.name, trust_bundle=_inline(bundle.to_pem())
            )
            for bundle in sorted(bundles, key=lambda b: b.trust_domain.name)
        ]
    )
    typed_config = any_pb2.Any()
    typed_config.Pack(validator)
    context = common_pb2.CertificateValidationContext(
        custom_validator_config=extension_pb2.TypedExtensionConfig(
            name=SPIFFE_VALIDATOR, typed_config=typed_config
        )
    )
    return secret_pb2.Secret(name=name, validation_context=context)


def trusted_ca_secret(name: str, bundle: Bundle) -> Any:
    context = common_pb2.CertificateValidationContext(trusted_ca=_inline(bundle.to_pem()))
    return secret_pb2.Secret(name=name, validation_context=context)


@dataclass
class Resolution:
    """What a request's names resolve to: Secrets, names the caller is entitled to but the agent
    does not hold yet (``pending``), and names it is not entitled to (``unknown``)."""

    secrets: list[Any] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def quoted_names(names: Sequence[str]) -> str:
    """Names for an error message: quoted, shortened, at most a handful."""
    shown = [repr(n[:_NAME_CHARS_IN_ERRORS]) for n in names[:_NAMES_IN_ERRORS]]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


class SecretResolver:
    """The Secrets one caller may have right now: from its entries (in the cache's order) and
    the cache's state for it, for the node that asks."""

    def __init__(
        self,
        config: SdsConfig,
        node: Any,
        entries: Sequence[WorkloadEntry],
        update: WorkloadUpdate,
    ) -> None:
        self._config = config
        self._no_validator_reason = why_no_spiffe_validator(config, node)
        self._entries = list(entries)
        self._update = update
        self._by_entry: dict[str, Identity] = {i.entry.entry_id: i for i in update.identities}
        self._by_spiffe_id: dict[str, Identity] = {}
        for identity in update.identities:
            self._by_spiffe_id.setdefault(str(identity.entry.spiffe_id), identity)
        self._entitled_ids = {str(e.spiffe_id) for e in self._entries}
        self._entitled_tds = {str(td.id): td for e in self._entries for td in e.federates_with}

    def resolve(self, resource_names: Iterable[str]) -> Resolution:
        names = [n for n in dict.fromkeys(resource_names) if n]
        if len(names) > MAX_RESOURCE_NAMES:
            raise InvalidArgument(
                f"{len(names)} resource names requested; limit {MAX_RESOURCE_NAMES}"
            )
        if not names:
            return Resolution(secrets=self._everything())
        resolution = Resolution()
        for name in names:
            found = self._one(name)
            if found is _UNKNOWN:
                resolution.unknown.append(name)
            elif found is _PENDING:
                resolution.pending.append(name)
            else:
                resolution.secrets.append(found)
        return resolution

    # ---- one name ----------------------------------------------------------------------------

    def _one(self, name: str) -> Any:
        own = self._update.bundle
        if own is not None and name == str(own.trust_domain.id):
            return self._validation_context(name, own)
        if name in self._entitled_tds:
            federated = self._update.federated_bundles.get(self._entitled_tds[name])
            return _PENDING if federated is None else self._validation_context(name, federated)
        if name in self._entitled_ids:
            identity = self._by_spiffe_id.get(name)
            return _PENDING if identity is None else tls_certificate_secret(name, identity.svid)
        return self._default_name(name)

    def _default_name(self, name: str) -> Any:
        config, own = self._config, self._update.bundle
        if name == config.default_svid_name and self._entries:
            identity = self._by_entry.get(self._entries[0].entry_id)
            return _PENDING if identity is None else tls_certificate_secret(name, identity.svid)
        if name == config.default_bundle_name:
            return _PENDING if own is None else self._validation_context(name, own)
        if name == config.default_all_bundles_name:
            if own is None:
                return _PENDING
            return self._all_bundles(name, [own, *self._update.federated_bundles.values()])
        return _UNKNOWN

    # ---- builders ----------------------------------------------------------------------------

    def _validation_context(self, name: str, bundle: Bundle) -> Any:
        if self._no_validator_reason is None:
            return spiffe_validator_secret(name, [bundle])
        return trusted_ca_secret(name, bundle)

    def _all_bundles(self, name: str, bundles: list[Bundle]) -> Any:
        if self._no_validator_reason is not None:
            raise FailedPrecondition(
                f"resource {name!r} (every bundle) needs Envoy's SPIFFE certificate validator,"
                f" which is off for this node: {self._no_validator_reason}"
            )
        return spiffe_validator_secret(name, bundles)

    def _everything(self) -> list[Any]:
        """A wildcard request: every bundle and SVID, named by their IDs (as SPIRE)."""
        secrets: list[Any] = []
        if self._update.bundle is not None:
            own = self._update.bundle
            secrets.append(self._validation_context(str(own.trust_domain.id), own))
        for td, bundle in sorted(self._update.federated_bundles.items()):
            secrets.append(self._validation_context(str(td.id), bundle))
        for spiffe_id, identity in self._by_spiffe_id.items():
            secrets.append(tls_certificate_secret(spiffe_id, identity.svid))
        return secrets


def packed(secrets: Iterable[Any]) -> list[Any]:
    """Secrets as the ``Any`` resources a DiscoveryResponse carries."""
    out = []
    for secret in secrets:
        resource = any_pb2.Any()
        resource.Pack(secret)
        out.append(resource)
    return out
