"""Fake container daemons for the docker and k8s workload attestors' tests.

``FakeDockerEngine`` answers the Docker Engine API on a unix socket (``GET
/[v<version>/]containers/<id>/json`` and ``/images/<name>/json``, with the daemon's 404 body
for what it does not know); ``FakeKubelet`` answers ``GET /pods`` on loopback, over HTTP (the
read-only port) or HTTPS (the secure port: its own CA, an optional bearer token or client
certificate it insists on). The documents are shaped as the real daemons write them
(``docker_inspect``, ``kube_pod``). Both record every request.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import socketserver
import ssl
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Seen:
    path: str  # percent-decoded, as the daemons route
    headers: dict[str, str]
    raw_path: str  # as sent


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: Any = None

    def log_message(self, format: str, *args: object) -> None:
        pass

    def address_string(self) -> str:
        return "peer"

    def do_GET(self) -> None:
        fake = self.fake
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        with fake.lock:
            headers = {k.lower(): v for k, v in self.headers.items()}
            fake.seen.append(Seen(path, headers, urllib.parse.urlsplit(self.path).path))
        status, document = fake.answer(path, self.headers)
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _UnixHttpServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _FakeBase:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[Seen] = []

    def paths(self) -> list[str]:
        with self.lock:
            return [s.path for s in self.seen]

    def raw_paths(self) -> list[str]:
        with self.lock:
            return [s.raw_path for s in self.seen]

    def answer(self, path: str, headers: Any) -> tuple[int, object]:
        raise NotImplementedError

    def _handler(self) -> type[_Handler]:
        return type("Handler", (_Handler,), {"fake": self})


class FakeDockerEngine(_FakeBase):
    """The Docker Engine API on ``socket_path``."""

    def __init__(self, socket_path: Path) -> None:
        super().__init__()
        self.socket_path = socket_path
        self.containers: dict[str, dict[str, Any]] = {}
        self.images: dict[str, dict[str, Any]] = {}
        self.unknown_for = 0  # answer 404 to this many container inspects first
        self.server = _UnixHttpServer(str(socket_path), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str, headers: Any) -> tuple[int, object]:
        path = re.sub(r"^/v[0-9]+\.[0-9]+/", "/", path)
        if m := re.fullmatch(r"/containers/([^/]+)/json", path):
            with self.lock:
                hidden = self.unknown_for > 0
                self.unknown_for -= 1
            inspect = None if hidden else self.containers.get(m.group(1))
            if inspect is None:
                return 404, {"message": f"No such container: {m.group(1)}"}
            return 200, inspect
        if m := re.fullmatch(r"/images/(.+)/json", path):
            image = self.images.get(m.group(1))
            if image is None:
                return 404, {"message": f"No such image: {m.group(1)}"}
            return 200, image
        return 404, {"message": "page not found"}


def docker_inspect(
    container_id: str, image: str, labels: dict[str, str], env: list[str]
) -> dict[str, Any]:
    """A ``GET /containers/<id>/json`` document as dockerd 24+ writes it (fields trimmed to
    the ones of each block that real documents always carry)."""
    return {
        "Id": container_id,
        "Created": "2026-12-01T09:12:44.123456789Z",
        "Path": "/docker-entrypoint.sh",
        "Args": ["nginx", "-g", "daemon off;"],
        "State": {"Status": "running", "Running": True, "Pid": 4242, "ExitCode": 0},
        "Image": "sha256:" + "ab" * 32,
        "Name": "/web",
        "RestartCount": 0,
        "Driver": "overlay2",
        "HostConfig": {"NetworkMode": "bridge", "Privileged": False},
        "Config": {
            "Hostname": container_id[:12],
            "User": "",
            "Env": env,
            "Cmd": ["nginx", "-g", "daemon off;"],
            "Image": image,
            "WorkingDir": "",
            "Entrypoint": ["/docker-entrypoint.sh"],
            "Labels": labels,
        },
        "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.2"}}},
    }


def docker_image(image_id: str, repo_digests: list[str]) -> dict[str, Any]:
    return {"Id": image_id, "RepoTags": [], "RepoDigests": repo_digests, "Os": "linux"}


def kube_pod(
    uid: str,
    name: str,
    namespace: str,
    containers: list[tuple[str, str, str, str]],
    *,
    init_containers: list[tuple[str, str, str, str]] = (),  # type: ignore[assignment]
    labels: dict[str, str] | None = None,
    owner: tuple[str, str, str] | None = None,
    service_account: str = "default",
    node: str = "node-1",
) -> dict[str, Any]:
    """A pod as the kubelet lists it; containers are (name, image, imageID, containerID)."""

    def status(c: tuple[str, str, str, str]) -> dict[str, Any]:
        name, image, image_id, container_id = c
        return {
            "name": name,
            "state": {"running": {"startedAt": "2026-12-01T09:12:44Z"}},
            "lastState": {},
            "ready": True,
            "restartCount": 0,
            "image": image,
            "imageID": image_id,
            "containerID": container_id,
            "started": True,
        }

    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid,
        "resourceVersion": "1234",
        "creationTimestamp": "2026-12-01T09:12:40Z",
        "labels": labels or {},
        "annotations": {"kubernetes.io/config.seen": "2026-12-01T09:12:40Z"},
    }
    if owner:
        kind, owner_name, owner_uid = owner
        metadata["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": kind,
                "name": owner_name,
                "uid": owner_uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {
        "metadata": metadata,
        "spec": {
            "containers": [{"name": c[0], "image": c[1]} for c in containers],
            "restartPolicy": "Always",
            "serviceAccountName": service_account,
            "serviceAccount": service_account,
            "nodeName": node,
        },
        "status": {
            "phase": "Running",
            "hostIP": "10.0.0.5",
            "podIP": "10.244.1.7",
            "startTime": "2026-12-01T09:12:40Z",
            "initContainerStatuses": [status(c) for c in init_containers],
            "containerStatuses": [status(c) for c in containers],
            "qosClass": "BestEffort",
        },
    }


@dataclass
class KubeletTls:
    """A CA, the kubelet's certificate from it (for 127.0.0.1 and ``localhost``), and a client
    certificate from it; all written under ``directory``."""

    directory: Path
    server_names: tuple[str, ...] = ("localhost",)
    paths: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        now = dt.datetime.now(dt.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubelet-ca")])
        ca = _cert(ca_name, ca_name, ca_key, ca_key, now, is_ca=True)
        self._write("ca", ca, None)
        for role, names in (("server", self.server_names), ("client", ("system:spire",))):
            key = ec.generate_private_key(ec.SECP256R1())
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
            cert = _cert(subject, ca_name, key, ca_key, now, san=names if role == "server" else ())
            self._write(role, cert, key)

    def _write(
        self, role: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None
    ) -> None:
        self.paths[role] = self.directory / f"{role}.pem"
        self.paths[role].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            self.paths[f"{role}-key"] = self.directory / f"{role}.key"
            self.paths[f"{role}-key"].write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )


def _cert(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
    *,
    is_ca: bool = False,
    san: tuple[str, ...] = (),
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if san:
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in san]
        names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signer, hashes.SHA256())


class FakeKubelet(_FakeBase):
    """``GET /pods`` on 127.0.0.1; HTTPS when ``tls`` is given. With ``token`` set it answers
    401 to any other bearer token; with ``require_client_cert`` the TLS handshake needs a
    certificate from the CA."""

    def __init__(
        self,
        tls: KubeletTls | None = None,
        *,
        token: str | None = None,
        require_client_cert: bool = False,
    ) -> None:
        super().__init__()
        self.pods: list[dict[str, Any]] = []
        self.hidden_for = 0  # list no pods in this many answers first
        self.token = token
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        # a refused TLS handshake is what some tests want: keep it off stderr
        self.server.handle_error = lambda request, address: None  # type: ignore[method-assign]
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls.paths["server"], tls.paths["server-key"])
            if require_client_cert:
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.load_verify_locations(tls.paths["ca"])
            self.server.socket = ctx.wrap_socket(
                self.server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str, headers: Any) -> tuple[int, object]:
        if path != "/pods":
            return 404, {"kind": "Status", "status": "Failure", "code": 404}
        if self.token is not None and headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {"kind": "Status", "status": "Failure", "reason": "Unauthorized"}
        with self.lock:
            hidden = self.hidden_for > 0
            self.hidden_for -= 1
            items = [] if hidden else list(self.pods)
        return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
