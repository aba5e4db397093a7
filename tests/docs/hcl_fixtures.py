"""What an HCL block from the docs needs to validate here: its absolute paths moved under a
temporary root, the files it names made there, and, for a fragment, the smallest server or
agent config around it."""

from __future__ import annotations

import base64
import datetime
import re
from functools import cache
from pathlib import Path

from cryptography import x509

from tests.pki import self_signed

DOC_PATH = re.compile(r"/(etc|var/lib|run|tmp)/plastron")
QUOTED = re.compile(r'"([^"]*)"')
PLUGIN_TYPES = ("DataStore", "KeyManager", "NodeAttestor", "UpstreamAuthority", "WorkloadAttestor")
SERVER_REQUIRED = {"trust_domain": '"example.org"', "data_dir": '"/var/lib/plastron"'}
SERVER_PLUGINS = {
    "DataStore": '"sql" { plugin_data { database_type = "sqlite3" '
    'connection_string = "/var/lib/plastron/datastore.sqlite3" } }',
    "KeyManager": '"memory" { plugin_data {} }',
    "NodeAttestor": '"join_token" { plugin_data {} }',
}
AGENT_REQUIRED = {
    "trust_domain": '"example.org"',
    "data_dir": '"/var/lib/plastron-agent"',
    "server_address": '"plastron.example.org"',
    "trust_bundle_path": '"/etc/plastron/bootstrap.pem"',
}
AGENT_PLUGINS = {
    "NodeAttestor": '"join_token" { plugin_data {} }',
    "KeyManager": '"memory" { plugin_data {} }',
    "WorkloadAttestor": '"unix" { plugin_data {} }',
}


# Shell for a mount namespace with a fresh /run: a pod's service account, where the k8s
# attestor reads the kubelet CA and token by default (/var/run is /run where tests run).
SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
IN_A_POD = (
    f'[ "$(readlink -f /var/run)" = /run ] && mkdir -p {SERVICE_ACCOUNT} && '
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=k8s-ca "
    f"-keyout /dev/null -out {SERVICE_ACCOUNT}/ca.crt 2>/dev/null && "
    f"echo example-token > {SERVICE_ACCOUNT}/token"
)


def move_paths_under(root: Path, text: str) -> str:
    """/etc/plastron..., /var/lib/plastron..., /run/plastron..., /tmp/plastron... under root."""
    return DOC_PATH.sub(lambda m: f"{root}{m.group(0)}", text)


@cache
def _self_signed_ca() -> tuple[bytes, bytes]:
    ca = self_signed(
        "docs example CA",
        lifetime=datetime.timedelta(days=1),
        ca=True,
        sans=[x509.UniformResourceIdentifier("spiffe://example.org")],
    )
    return ca.cert_pem(), ca.key_pem()


def _kubeconfig(ca: bytes) -> str:
    return (
        "current-context: c\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
        f"clusters: [{{name: k, cluster: {{server: 'https://k8s.example.org', "
        f"certificate-authority-data: {base64.b64encode(ca).decode()}}}}}]\n"
        "users: [{name: u, user: {token: example}}]\n"
    )


def _make_file(path: Path) -> None:
    cert, key = _self_signed_ca()
    name = path.name
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if name.endswith("cas"):  # tpm-manufacturer-cas, ek-cas: a directory of CA files
        path.mkdir(mode=0o700, exist_ok=True)
        (path / "ca.pem").write_bytes(cert)
    elif name.endswith(".kubeconfig"):
        path.write_text(_kubeconfig(cert))
        path.chmod(0o600)
    elif "key" in name:
        path.write_bytes(key)
        path.chmod(0o600)
    elif name.endswith((".pem", ".crt")):
        path.write_bytes(cert)
    elif name.endswith("hashes"):  # one EK hash a line
        path.write_text("ab" * 32 + "\n")
    elif name.endswith(".pin"):
        path.write_text("1234")
        path.chmod(0o600)
    elif name.endswith(".json"):
        path.write_text("{}")
    else:  # a secret, a kubeconfig: content the validation does not read
        path.write_text("example\n")
        path.chmod(0o600)


def make_named_files(root: Path, text: str) -> None:
    """Each file under root that a quoted string (or a ``file:`` PIN source) names."""
    root.chmod(0o700)
    for quoted in QUOTED.findall(text):
        for found in re.findall(rf"{re.escape(str(root))}[^\s\"&;?]*", quoted):
            path = Path(found)
            if path.suffix in (".sock", ".sqlite3") or path.name.endswith(("data", "-agent")):
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            elif "/var/lib/plastron" in found and path.suffix == "":
                path.mkdir(parents=True, exist_ok=True, mode=0o700)
            elif not path.exists():
                _make_file(path)


def _top_level(text: str) -> set[str]:
    return set(re.findall(r"^(\w+)\s*(?:\"[^\"]*\"\s*)?\{", text, re.M))


def _with_required(text: str, section: str, required: dict[str, str]) -> str:
    missing = "".join(
        f"  {key} = {value}\n"
        for key, value in required.items()
        if not re.search(rf"\b{key}\s*=", text)
    )
    if re.search(rf"^{section}\s*\{{", text, re.M):
        return re.sub(
            rf"^{section}\s*\{{\n?", f"{section} {{\n{missing}", text, count=1, flags=re.M
        )
    return f"{section} {{\n{missing}}}\n{text}"


def _with_plugins(text: str, defaults: dict[str, str]) -> str:
    missing = "".join(
        f"  {kind} {spec}\n"
        for kind, spec in defaults.items()
        if not re.search(rf"\b{kind}\s+\"", text)
    )
    if re.search(r"^plugins\s*\{", text, re.M):
        return re.sub(r"^plugins\s*\{\n?", f"plugins {{\n{missing}", text, count=1, flags=re.M)
    return f"{text}\nplugins {{\n{missing}}}\n"


def _wrap_fragment(text: str, section: str) -> str:
    top = _top_level(text)
    if top & set(PLUGIN_TYPES):
        return f"plugins {{\n{text}}}\n"
    if "profile" in top:  # a bundle endpoint profile (federation.md)
        return f"{section} {{\n federation {{\n bundle_endpoint {{\n{text} }}\n }}\n}}\n"
    if top - {"server", "agent", "plugins", "telemetry", "health_checks"}:
        return f"{section} {{\n{text}}}\n"
    return text


def server_config_around(fragment: str) -> str:
    text = _wrap_fragment(fragment, "server")
    return _with_plugins(_with_required(text, "server", SERVER_REQUIRED), SERVER_PLUGINS)


def agent_config_around(fragment: str) -> str:
    text = _wrap_fragment(fragment, "agent")
    return _with_plugins(_with_required(text, "agent", AGENT_REQUIRED), AGENT_PLUGINS)
