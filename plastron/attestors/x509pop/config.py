"""Configuration of both x509pop halves (SPIRE's keys), and the agent ID path rule.

Server ``plugin_data``: ``mode`` (``external_pki`` | ``spiffe``), ``ca_bundle_path`` /
``ca_bundle_paths`` (PEM roots, external_pki only), ``spiffe_prefix`` (SPIRE's docs call it
``svid_prefix``; default ``/spire-exchange/``), ``agent_path_template``, ``max_intermediates``
(4), ``max_rsa_key_size`` (8192). ``verify_client_ip`` is refused: the attestor is not told the
peer address.

Agent ``plugin_data``, as SPIRE's agent plugin plus one key:

- ``certificate_path``: PEM, the node certificate first, then any intermediates;
- ``intermediates_path`` (optional): PEM intermediates appended after those;
- ``private_key_path``: PEM private key (PKCS#1, SEC1 or PKCS#8, unencrypted), **or**
- ``private_key_uri``: ``pkcs11:token=<label>;object=<key label>?module-path=<module>&
  pin-source=file:<path>`` — a node key held in an HSM (generated in the token, sensitive,
  never extractable); it signs in the token and is never read. The hsm room opens it (see
  :attr:`plastron.plugins.Registries.key_uri_openers`).

Relative paths resolve against ``base_dir`` (the config file's directory).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from plastron.attestors.template import PathTemplate
from plastron.attestors.x509pop.template import DEFAULT_EXTERNAL_PKI, DEFAULT_SPIFFE
from plastron.attestors.x509pop.template import parse as parse_template
from plastron.configs.block import Block
from plastron.errors import ConfigError

MODES = ("external_pki", "spiffe")
DEFAULT_MAX_INTERMEDIATES = 4
DEFAULT_MAX_RSA_KEY_SIZE = 8192
DEFAULT_SPIFFE_PREFIX = "/spire-exchange/"
MAX_CA_FILE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class X509PopServerConfig:
    mode: str = "external_pki"
    ca_bundle: tuple[x509.Certificate, ...] = ()
    agent_path_template: PathTemplate = DEFAULT_EXTERNAL_PKI
    spiffe_prefix: str = DEFAULT_SPIFFE_PREFIX
    max_intermediates: int = DEFAULT_MAX_INTERMEDIATES
    max_rsa_key_size: int = DEFAULT_MAX_RSA_KEY_SIZE

    @classmethod
    def from_plugin_data(
        cls, data: Mapping[str, Any], *, base_dir: Path | None = None, where: str = "x509pop"
    ) -> X509PopServerConfig:
        return cls.from_settings(Block(dict(data), where), base_dir=base_dir)

    @classmethod
    def from_settings(cls, settings: Block, *, base_dir: Path | None = None) -> X509PopServerConfig:
        """Relative file paths are taken from ``base_dir`` (the config file's directory)."""
        mode = _mode(settings)
        verify_client_ip = settings.boolean("verify_client_ip", False)
        paths = _bundle_paths(settings)
        template_text: str | None = settings.string("agent_path_template", None)
        spiffe_prefix = _spiffe_prefix(settings)
        max_intermediates = settings.integer("max_intermediates", cls.max_intermediates, 1)
        max_rsa_key_size = settings.integer("max_rsa_key_size", cls.max_rsa_key_size, 1)
        settings.finish()  # any other key: unknown key "<where>.<key>"
        if verify_client_ip:
            raise ConfigError(
                f"{settings.where('verify_client_ip')} is not supported by Plastron's x509pop"
            )
        if mode == "spiffe" and paths:
            raise ConfigError(f"{settings.path}: ca_bundle_path(s) cannot be used in spiffe mode")
        if mode == "external_pki" and not paths:
            raise ConfigError(
                f"{settings.path}: one of ca_bundle_path or ca_bundle_paths is required"
            )
        default = DEFAULT_SPIFFE if mode == "spiffe" else DEFAULT_EXTERNAL_PKI
        return cls(
            mode=mode,
            ca_bundle=tuple(
                cert for p in paths for cert in _load_ca_file(_resolve(p, base_dir), settings.path)
            ),
            agent_path_template=_template(template_text, default, settings.path),
            spiffe_prefix=spiffe_prefix,
            max_intermediates=max_intermediates,
            max_rsa_key_size=max_rsa_key_size,
        )


@dataclass(frozen=True)
class X509PopAgentConfig:
    certificate_path: Path
    private_key_path: Path | None = None
    private_key_uri: str | None = None
    intermediates_path: Path | None = None

    @classmethod
    def from_plugin_data(
        cls, data: Mapping[str, Any], *, base_dir: Path | None = None, where: str = "x509pop"
    ) -> X509PopAgentConfig:
        return cls.from_settings(Block(dict(data), where), base_dir=base_dir)

    @classmethod
    def from_settings(cls, settings: Block, *, base_dir: Path | None = None) -> X509PopAgentConfig:
        """Relative file paths are taken from ``base_dir`` (the config file's directory)."""
        cert = settings.optional_string("certificate_path")
        key_path = settings.optional_string("private_key_path")
        uri = settings.optional_string("private_key_uri")
        # SPIRE's agent takes an empty intermediates_path as "none"
        intermediates = settings.string("intermediates_path", "")
        settings.finish()  # any other key: unknown key "<where>.<key>"
        if cert is None:
            raise ConfigError(f"{settings.where('certificate_path')} is required")
        if (key_path is None) == (uri is None):
            raise ConfigError(
                f"{settings.path}: give exactly one of private_key_path, private_key_uri"
            )
        if uri is not None and not uri.startswith("pkcs11:"):
            raise ConfigError(f"{settings.where('private_key_uri')} must be a pkcs11: URI")
        return cls(
            certificate_path=_resolve(cert, base_dir),
            private_key_path=None if key_path is None else _resolve(key_path, base_dir),
            private_key_uri=uri,
            intermediates_path=_resolve(intermediates, base_dir) if intermediates else None,
        )


def _resolve(path: str, base_dir: Path | None) -> Path:
    p = Path(path)
    return base_dir / p if base_dir is not None and not p.is_absolute() else p


def _mode(settings: Block) -> str:
    # SPIRE takes an empty mode as external_pki
    if settings.has("mode") and settings.raw("mode") == "":
        return "external_pki"
    return settings.choice("mode", "external_pki", MODES)


def _template(text: str | None, default: PathTemplate, where: str) -> PathTemplate:
    try:
        template = default if text is None else parse_template(text)
        template.check_shape()
    except ConfigError as exc:
        # the template engine's messages begin with the key's name: prefix its block's path
        raise ConfigError(f"{where}.{exc}") from None
    return template


def _bundle_paths(settings: Block) -> list[str]:
    single: str = settings.string("ca_bundle_path", "")
    many = settings.string_list("ca_bundle_paths")
    if single and many:
        raise ConfigError(f"{settings.path}: give ca_bundle_path or ca_bundle_paths, not both")
    if not all(many):
        raise ConfigError(f"{settings.where('ca_bundle_paths')} has an empty path")
    return [single] if single else list(many)


def _load_ca_file(path: Path, where: str) -> list[x509.Certificate]:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CA_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"{where}: cannot read trust bundle {str(path)!r}: {exc.strerror}"
        ) from None
    if len(data) > MAX_CA_FILE_BYTES:
        raise ConfigError(
            f"{where}: trust bundle {str(path)!r} is larger than {MAX_CA_FILE_BYTES} bytes"
        )
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(f"{where}: trust bundle {str(path)!r} holds no PEM certificate") from None


def _spiffe_prefix(settings: Block) -> str:
    # SPIRE's code reads "spiffe_prefix", its docs say "svid_prefix": accept either, not both.
    if settings.has("spiffe_prefix") and settings.has("svid_prefix"):
        raise ConfigError(f"{settings.path}: give spiffe_prefix or svid_prefix, not both")
    key = "svid_prefix" if settings.has("svid_prefix") else "spiffe_prefix"
    prefix: str = settings.string(key, DEFAULT_SPIFFE_PREFIX)
    return prefix if prefix.endswith("/") else prefix + "/"
