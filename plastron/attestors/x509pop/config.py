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

SERVER_KEYS = (
    "mode", "ca_bundle_path", "ca_bundle_paths", "spiffe_prefix", "svid_prefix",
    "agent_path_template", "max_intermediates", "max_rsa_key_size", "verify_client_ip",
)  # fmt: skip
AGENT_KEYS = ("certificate_path", "intermediates_path", "private_key_path", "private_key_uri")
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
        where = settings.path
        data = {key: settings.raw(key) for key in SERVER_KEYS if settings.has(key)}
        settings.finish()  # any other key: unknown key "<where>.<key>"
        mode = data.get("mode", "external_pki") or "external_pki"
        if mode not in ("external_pki", "spiffe"):
            raise ConfigError(f"{where}.mode must be external_pki or spiffe, not {mode!r}")
        if data.get("verify_client_ip", False) is not False:
            raise ConfigError(f"{where}.verify_client_ip is not supported by Plastron's x509pop")
        paths = _bundle_paths(data, where)
        if mode == "spiffe" and paths:
            raise ConfigError(f"{where}: ca_bundle_path(s) cannot be used in spiffe mode")
        if mode == "external_pki" and not paths:
            raise ConfigError(f"{where}: one of ca_bundle_path or ca_bundle_paths is required")
        bundle: list[x509.Certificate] = []
        for p in paths:
            path = Path(p)
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            bundle.extend(_load_ca_file(path, where))
        template = DEFAULT_SPIFFE if mode == "spiffe" else DEFAULT_EXTERNAL_PKI
        if "agent_path_template" in data:
            template = parse_template(data["agent_path_template"])
        template.check_shape()
        return cls(
            mode=mode,
            ca_bundle=tuple(bundle),
            agent_path_template=template,
            spiffe_prefix=_spiffe_prefix(data, where),
            max_intermediates=_positive(
                data, "max_intermediates", DEFAULT_MAX_INTERMEDIATES, where
            ),
            max_rsa_key_size=_positive(data, "max_rsa_key_size", DEFAULT_MAX_RSA_KEY_SIZE, where),
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
        where = settings.path
        data = {key: settings.raw(key) for key in AGENT_KEYS if settings.has(key)}
        settings.finish()  # any other key: unknown key "<where>.<key>"

        def path(key: str) -> Path | None:
            value = data.get(key)
            if value is None or (key == "intermediates_path" and value == ""):
                return None
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{where}.{key} must be a non-empty string")
            p = Path(value)
            return base_dir / p if base_dir is not None and not p.is_absolute() else p

        cert = path("certificate_path")
        if cert is None:
            raise ConfigError(f"{where}.certificate_path is required")
        key_path, uri = path("private_key_path"), data.get("private_key_uri")
        if (key_path is None) == (uri is None):
            raise ConfigError(f"{where}: give exactly one of private_key_path, private_key_uri")
        if uri is not None and (not isinstance(uri, str) or not uri.startswith("pkcs11:")):
            raise ConfigError(f"{where}.private_key_uri must be a pkcs11: URI")
        return cls(cert, key_path, uri, path("intermediates_path"))


def _bundle_paths(data: Mapping[str, Any], where: str) -> list[str]:
    single, many = data.get("ca_bundle_path"), data.get("ca_bundle_paths")
    if single and many:
        raise ConfigError(f"{where}: give ca_bundle_path or ca_bundle_paths, not both")
    if single is not None and (not isinstance(single, str)):
        raise ConfigError(f"{where}.ca_bundle_path must be a string")
    if many is not None and (
        not isinstance(many, list) or not all(isinstance(p, str) and p for p in many)
    ):
        raise ConfigError(f"{where}.ca_bundle_paths must be a list of non-empty strings")
    return [single] if single else list(many or [])


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


def _spiffe_prefix(data: Mapping[str, Any], where: str) -> str:
    # SPIRE's code reads "spiffe_prefix", its docs say "svid_prefix": accept either, not both.
    if "spiffe_prefix" in data and "svid_prefix" in data:
        raise ConfigError(f"{where}: give spiffe_prefix or svid_prefix, not both")
    prefix = data.get("spiffe_prefix", data.get("svid_prefix", DEFAULT_SPIFFE_PREFIX))
    if not isinstance(prefix, str):
        raise ConfigError(f"{where}.spiffe_prefix must be a string")
    return prefix if prefix.endswith("/") else prefix + "/"


def _positive(data: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where}.{key} must be an integer greater than 0, not {value!r}")
    return value
