"""A fake Kubernetes API server on loopback, over TLS with a test CA: TokenReview (validating
projected service-account tokens it signs with a test RSA key: signature, audience, expiry),
and GET for the pods and nodes the test puts in it. Every call must carry the plugin's bearer
token. It writes a kubeconfig that points at itself."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.cloud.fake_http import FakeHttp, Reply, Seen
from tests.cloud.tokens import rsa_key

TOKEN_REVIEW = "/apis/authentication.k8s.io/v1/tokenreviews"
API_TOKEN = "plugin-reader-token"
AUDIENCE = "spire-server"
SIGNING_SLOT = 21


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: ec.EllipticCurvePrivateKey,
    *, ca: bool,
) -> x509.Certificate:  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        builder = builder.add_extension(san, critical=False)
    return builder.sign(signer, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Pod:
    namespace: str
    name: str
    uid: str
    node_name: str
    service_account: str = "spire-agent"
    labels: dict[str, str] = field(default_factory=dict)
    host_ip: str = "10.0.0.7"


def sa_claims(
    pod: Pod, *, audience: str | list[str] = AUDIENCE, now: dt.datetime | None = None,
    lifetime: dt.timedelta = dt.timedelta(hours=1), service_account: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    iat = int((now or dt.datetime.now(dt.UTC)).timestamp())
    account = service_account or pod.service_account
    return {
        "iss": "https://kubernetes.default.svc.cluster.local",
        "aud": [audience] if isinstance(audience, str) else audience,
        "iat": iat,
        "nbf": iat,
        "exp": iat + int(lifetime.total_seconds()),
        "sub": f"system:serviceaccount:{pod.namespace}:{account}",
        "kubernetes.io": {
            "namespace": pod.namespace,
            "pod": {"name": pod.name, "uid": pod.uid},
            "serviceaccount": {"name": account, "uid": "sa-uid-1"},
        },
    }


class FakeKubernetes:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.http = FakeHttp()
        ca_key, leaf_key = (
            ec.generate_private_key(ec.SECP256R1()),
            ec.generate_private_key(ec.SECP256R1()),
        )
        self.ca_cert = _cert("fake-k8s-ca", ca_key, "fake-k8s-ca", ca_key, ca=True)
        leaf = _cert("kube-apiserver", leaf_key, "fake-k8s-ca", ca_key, ca=False)
        (directory / "k8s-ca.pem").write_bytes(_pem(self.ca_cert))
        (directory / "apiserver.pem").write_bytes(_pem(leaf))
        (directory / "apiserver.key").write_bytes(
            leaf_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )  # fmt: skip
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(directory / "apiserver.pem", directory / "apiserver.key")
        self.http.server.socket = tls.wrap_socket(self.http.server.socket, server_side=True)
        self.signing_key = rsa_key(SIGNING_SLOT)
        self.nodes: dict[str, dict[str, Any]] = {}
        self.http.route("POST", TOKEN_REVIEW, self._token_review)

    def __enter__(self) -> FakeKubernetes:
        self.http.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    @property
    def url(self) -> str:
        return f"https://{self.http.host}"

    def kubeconfig(self, name: str = "kubeconfig.yaml", token: str = API_TOKEN) -> Path:
        """A kubeconfig for this server: the CA as a file, the plugin's token inline."""
        text = f"""apiVersion: v1
kind: Config
current-context: test
clusters:
- name: fake
  cluster:
    server: {self.url}
    certificate-authority: k8s-ca.pem
users:
- name: reader
  user:
    token: {token}
contexts:
- name: test
  context:
    cluster: fake
    user: reader
"""
        path = self.dir / name
        path.write_text(text)
        return path

    def sign(self, claims: dict[str, Any], key: Any = None) -> str:
        return jwt.encode(claims, key or self.signing_key, algorithm="RS256", headers={"kid": "k"})

    def add_node(self, name: str, uid: str, labels: dict[str, str] | None = None) -> None:
        doc = {"kind": "Node", "metadata": {"name": name, "uid": uid, "labels": labels or {}}}
        self.nodes[name] = doc
        self.http.route("GET", f"/api/v1/nodes/{name}", self._authed(Reply(200, json.dumps(doc))))

    def add_pod(self, pod: Pod) -> None:
        doc = {
            "kind": "Pod",
            "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid,
                         "labels": pod.labels},
            "spec": {"nodeName": pod.node_name, "serviceAccountName": pod.service_account},
            "status": {"hostIP": pod.host_ip},
        }  # fmt: skip
        path = f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}"
        self.http.route("GET", path, self._authed(Reply(200, json.dumps(doc))))

    @staticmethod
    def _authed(reply: Reply) -> Any:
        def answer(seen: Seen) -> Reply:
            if seen.headers.get("authorization") != f"Bearer {API_TOKEN}":
                return Reply(401, '{"kind":"Status","reason":"Unauthorized"}')
            return reply

        return answer

    def _token_review(self, seen: Seen) -> Reply:
        if seen.headers.get("authorization") != f"Bearer {API_TOKEN}":
            return Reply(401, '{"kind":"Status","reason":"Unauthorized"}')
        spec = json.loads(seen.body)["spec"]
        audiences = spec.get("audiences") or []
        status: dict[str, Any]
        try:
            claims = jwt.decode(
                spec["token"], self.signing_key.public_key(), algorithms=["RS256"],
                audience=audiences, options={"require": ["exp", "iat", "nbf"]},
            )  # fmt: skip
        except jwt.PyJWTError as exc:
            status = {"authenticated": False, "error": f"invalid bearer token: {exc}"}
        else:
            k8s = claims["kubernetes.io"]
            status = {
                "authenticated": True,
                "user": {
                    "username": claims["sub"],
                    "uid": k8s["serviceaccount"]["uid"],
                    "groups": ["system:serviceaccounts"],
                    "extra": {
                        "authentication.kubernetes.io/pod-name": [k8s["pod"]["name"]],
                        "authentication.kubernetes.io/pod-uid": [k8s["pod"]["uid"]],
                    },
                },
                "audiences": [a for a in claims["aud"] if a in audiences],
            }
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                  "spec": spec, "status": status}  # fmt: skip
        return Reply(201, json.dumps(review))
