"""How the server reaches one cluster's API server: its URL, the TLS context that trusts the
cluster's CA (and presents a client certificate, if the kubeconfig has one), and the bearer
token the plugin authenticates with.

Two sources, as SPIRE (client-go): a kubeconfig file (its current context; a ``token``,
``tokenFile`` or client certificate; the CA as a file or inline data), or, with no file, the
pod's own service account (``KUBERNETES_SERVICE_HOST``/``_PORT`` and
``/var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt}``). Everything is read here, at
configuration time, so a bad path or file fails the server's start, not the first attestation.
Exec plugins and auth providers are refused: the server does not run programs a kubeconfig
names. A token file is read again for each call, since the kubelet rotates it.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plastron.attestors.cloud_http import check_secure_url
from plastron.errors import ConfigError

IN_CLUSTER_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MAX_FILE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ApiAccess:
    """Everything needed to call one API server."""

    server: str  # https://host:port, no trailing slash
    tls: ssl.SSLContext = field(repr=False)
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None

    def bearer(self) -> str | None:
        """The token to send: read from ``token_file`` for each call (it rotates)."""
        if self.token_file is not None:
            return read_small(self.token_file, "token file").decode("utf-8", "replace").strip()
        return self.token


def read_small(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {str(path)!r}: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{what} {str(path)!r} is larger than {MAX_FILE_BYTES} bytes")
    return data


def _tls_context(ca_pem: bytes, where: str) -> ssl.SSLContext:
    # only the cluster's CA is trusted (not the system store); hostnames are checked
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_verify_locations(cadata=ca_pem.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError):
        raise ConfigError(f"{where}: the cluster CA is not a PEM certificate") from None
    return context


def _client_cert(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes, where: str) -> None:
    # ssl loads a client certificate only from files: write them where only we can read
    with tempfile.TemporaryDirectory(prefix="plastron-k8s-") as tmp:
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert.write_bytes(cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(key_pem)
        try:
            context.load_cert_chain(cert, key)
        except (ssl.SSLError, ValueError):
            raise ConfigError(f"{where}: the client certificate or key does not load") from None


def in_cluster(where: str) -> ApiAccess:
    host, port = (
        os.environ.get("KUBERNETES_SERVICE_HOST"),
        os.environ.get("KUBERNETES_SERVICE_PORT"),
    )
    if not host or not port:
        raise ConfigError(
            f"{where}: no kube_config_file and not running in a pod "
            "(KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT unset)"
        )
    token_file = IN_CLUSTER_DIR / "token"
    read_small(token_file, f"{where}: in-cluster token")
    ca = read_small(IN_CLUSTER_DIR / "ca.crt", f"{where}: in-cluster CA")
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    return ApiAccess(server, _tls_context(ca, where), token_file=token_file)


def _named(doc: dict[str, Any], section: str, name: str, where: str) -> dict[str, Any]:
    for item in doc.get(section) or []:
        if isinstance(item, dict) and item.get("name") == name:
            inner = item.get(section[:-1])
            if isinstance(inner, dict):
                return inner
    raise ConfigError(f"{where}: the kubeconfig has no {section[:-1]} named {str(name)[:100]!r}")


def _file_or_data(entry: dict[str, Any], key: str, base: Path, where: str) -> bytes | None:
    data = entry.get(f"{key}-data")
    if isinstance(data, str) and data:
        try:
            return base64.b64decode(data, validate=True)
        except ValueError:
            raise ConfigError(f"{where}: kubeconfig {key}-data is not base64") from None
    path = entry.get(key)
    if isinstance(path, str) and path:
        return read_small(base / path, f"{where}: kubeconfig {key}")
    return None


def from_kubeconfig(path: Path, where: str) -> ApiAccess:
    """The current context of the kubeconfig at ``path``."""
    import yaml  # type: ignore[import-untyped]  # noqa: PLC0415  # the [k8s] extra

    try:
        doc = yaml.safe_load(read_small(path, f"{where}: kube_config_file"))
    except yaml.YAMLError:
        raise ConfigError(f"{where}: {str(path)!r} is not a kubeconfig (YAML)") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: {str(path)!r} is not a kubeconfig (no top-level map)")
    context = _named(doc, "contexts", doc.get("current-context", ""), where)
    cluster = _named(doc, "clusters", context.get("cluster", ""), where)
    user = _named(doc, "users", context.get("user", ""), where) if context.get("user") else {}
    if cluster.get("insecure-skip-tls-verify"):
        raise ConfigError(f"{where}: insecure-skip-tls-verify is refused: the CA is required")
    if "exec" in user or "auth-provider" in user:
        raise ConfigError(
            f"{where}: kubeconfig exec plugins and auth providers are not supported; "
            "use token, tokenFile or a client certificate"
        )
    server = check_secure_url(cluster.get("server"), f"{where}: kubeconfig cluster server")
    base = path.parent
    ca = _file_or_data(cluster, "certificate-authority", base, where)
    if ca is None:
        raise ConfigError(f"{where}: the kubeconfig cluster has no certificate-authority")
    tls = _tls_context(ca, where)
    cert = _file_or_data(user, "client-certificate", base, where)
    key = _file_or_data(user, "client-key", base, where)
    if cert is not None and key is not None:
        _client_cert(tls, cert, key, where)
    token, token_file = user.get("token"), user.get("tokenFile")
    access = ApiAccess(
        server.rstrip("/"),
        tls,
        token=token if isinstance(token, str) and token else None,
        token_file=base / token_file if isinstance(token_file, str) and token_file else None,
    )
    if access.token_file is not None:
        read_small(access.token_file, f"{where}: kubeconfig tokenFile")
    if access.token is None and access.token_file is None and cert is None:
        raise ConfigError(f"{where}: the kubeconfig user has no token, tokenFile or certificate")
    return access
