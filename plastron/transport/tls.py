"""TLS contexts for SPIFFE mTLS over grpclib, and the peer SPIFFE-ID check.

Server side (docs/architecture.md, "gRPC stack"): one port serves callers with and without an
X509-SVID, so the client certificate is *requested, not required*
(``CERT_OPTIONAL``); a certificate that is presented must chain to the trust
bundle or the handshake fails. Session tickets are off and TLS 1.3 tickets are
not issued, so every connection re-verifies its peer against the current
bundle (SPIRE advisory: resumed sessions skipped that check).

Rotation: grpclib cannot swap a listening server's context, so the context
handed to it carries an ``sni_callback`` that runs on every ClientHello (with
or without SNI) and points the connection at a context built from the current
SVID and bundle. Contexts are cached and rebuilt only when either changes.

Key material: Python's ``ssl`` loads a certificate and key only from a file
path. They go through an anonymous ``memfd`` (never on disk) or, where that is
unavailable, a private 0700 temp dir removed at once. The key must therefore
be exportable (the server's TLS X509-SVID key is a short-lived leaf key held
in memory; the CA key is the one that stays in the HSM), or be a
``TlsProviderKey``: a TPM-resident agent key is handed over as its TPM-wrapped
blob, which the tpm2-openssl provider turns into a key that signs in the TPM.

Client side: SVIDs carry a URI SAN and no DNS name, so host-name checking is
off and the peer is instead held to an expected SPIFFE ID by
:func:`verify_peer_spiffe_id` right after the handshake.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from plastron.errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    InvalidSvid,
    NotAuthorized,
)
from plastron.keymanager import PrivateKey, TlsProviderKey
from plastron.spiffe.ids import SpiffeId

ALPN = ["h2"]
_log = logging.getLogger(__name__)
MAX_BUNDLE_CERTS = 1024

TrustBundleSource = Callable[[], Sequence[x509.Certificate]]
IdMatcher = SpiffeId | Callable[[SpiffeId], bool]


class PeerIdentityError(NotAuthorized):
    """The TLS peer's certificate does not carry the SPIFFE ID we require."""


# TLS 1.2 renegotiation is refused outright: HTTP/2 forbids it (RFC 9113 section 9.2.1), and
# a renegotiation's handshake records are written by OpenSSL beneath the connection's output
# accounting (the unsent-output cap in coalesce.py). OpenSSL 3 already refuses a client's
# renegotiation unless allowed; this keeps it so whatever OpenSSL the interpreter links.
_NO_RESUMPTION_COMPRESSION_RENEGOTIATION = (
    ssl.OP_NO_TICKET | ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
)


def _base_context(purpose: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= _NO_RESUMPTION_COMPRESSION_RENEGOTIATION
    ctx.set_alpn_protocols(ALPN)
    return ctx


def _pem_chain(chain: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)


def _pem_key(key: PrivateKey) -> bytes:
    if isinstance(key, TlsProviderKey):
        return key.tls_key_pem()
    try:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    except (TypeError, ValueError, NotImplementedError) as exc:
        raise FailedPrecondition(
            f"tls: the TLS SVID key ({type(key).__name__}) is not exportable; Python's ssl "
            "needs the key in memory, so use a memory/disk key for the server's own "
            "short-lived TLS SVID (the CA key may stay in the HSM)"
        ) from exc


@contextlib.contextmanager
def _private_file(data: bytes) -> Iterator[str]:
    """A path whose content is `data`, readable only by us, gone when the block ends."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None and Path("/proc/self/fd").is_dir():
        fd = memfd_create("plastron-tls", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="plastron-tls-") as tmp:  # mode 0700
        path = os.path.join(tmp, "svid.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        try:
            yield path
        finally:
            os.unlink(path)


def _load_identity(ctx: ssl.SSLContext, chain: Sequence[x509.Certificate], key: PrivateKey) -> None:
    if not chain:
        raise InvalidSvid("tls: the certificate chain is empty (need at least the leaf)")
    with _private_file(_pem_key(key) + _pem_chain(chain)) as path:
        # The file holds key then certs; ssl finds each by its PEM label.
        try:
            ctx.load_cert_chain(path)
        except ssl.SSLError as exc:
            raise FailedPrecondition(
                f"tls: cannot load the X509-SVID and its key ({exc.reason or exc})"
            ) from None


def _load_trust(ctx: ssl.SSLContext, bundle: Sequence[x509.Certificate]) -> None:
    if len(bundle) > MAX_BUNDLE_CERTS:
        raise InvalidArgument(
            f"tls: trust bundle has {len(bundle)} certificates (limit {MAX_BUNDLE_CERTS})"
        )
    if bundle:
        ctx.load_verify_locations(cadata=_pem_chain(bundle).decode("ascii"))


def _bundle_digest(bundle: Sequence[x509.Certificate]) -> bytes:
    h = hashlib.sha256()
    for cert in bundle:
        h.update(hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest())
    return h.digest()


class RotatingServerTls:
    """Server TLS state that follows SVID rotation and trust-bundle changes.

    :meth:`context` is what the grpclib server listens with; each new handshake
    is moved onto a context built from the SVID and bundle current at that moment.
    """

    def __init__(
        self,
        svid_chain: Sequence[x509.Certificate],
        key: PrivateKey,
        trust_bundle: TrustBundleSource,
    ) -> None:
        self._lock = threading.Lock()
        self._trust_bundle = trust_bundle
        self._svid: tuple[tuple[x509.Certificate, ...], PrivateKey] = (tuple(svid_chain), key)
        self._generation = 0
        self._cache_key: tuple[int, bytes] | None = None
        self._current: ssl.SSLContext | None = None
        self._outer = self.current()
        self._outer.sni_callback = self._on_client_hello

    def set_svid(self, svid_chain: Sequence[x509.Certificate], key: PrivateKey) -> None:
        """Serve a new X509-SVID from the next handshake on (validated by loading it now)."""
        probe = self._new_context()
        _load_identity(probe, svid_chain, key)
        with self._lock:
            self._svid = (tuple(svid_chain), key)
            self._generation += 1

    def context(self) -> ssl.SSLContext:
        return self._outer

    def current(self) -> ssl.SSLContext:
        """The context for the SVID and bundle as they are now (cached until either changes)."""
        bundle = tuple(self._trust_bundle())
        with self._lock:
            chain, key = self._svid
            cache_key = (self._generation, _bundle_digest(bundle))
            if self._current is not None and cache_key == self._cache_key:
                return self._current
            ctx = self._new_context()
            _load_identity(ctx, chain, key)
            _load_trust(ctx, bundle)
            self._current, self._cache_key = ctx, cache_key
            return ctx

    @staticmethod
    def _new_context() -> ssl.SSLContext:
        ctx = _base_context(ssl.PROTOCOL_TLS_SERVER)
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.num_tickets = 0  # TLS 1.3: no (stateful or stateless) resumption tickets
        return ctx

    def _on_client_hello(
        self, ssl_object: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: object
    ) -> int | None:
        try:
            ctx = self.current()
        except Exception as exc:
            # Keep serving the last good context rather than failing every handshake.
            _log.warning("tls: cannot refresh server TLS context, keeping the last one: %s", exc)
            return None
        if ssl_object.context is not ctx:
            ssl_object.context = ctx
        return None


def server_ssl_context(
    svid_chain: Sequence[x509.Certificate],
    key: PrivateKey,
    trust_bundle: TrustBundleSource,
) -> ssl.SSLContext:
    """A server context following `trust_bundle` (use RotatingServerTls to rotate the SVID)."""
    return RotatingServerTls(svid_chain, key, trust_bundle).context()


def client_ssl_context(
    *,
    trust_bundle: Sequence[x509.Certificate],
    client_chain: Sequence[x509.Certificate] | None = None,
    client_key: PrivateKey | None = None,
) -> ssl.SSLContext:
    """Client context: chain verified against `trust_bundle`, no host-name check."""
    if not trust_bundle:
        raise InvalidArgument("tls: client trust bundle is empty; nothing could be verified")
    if (client_chain is None) != (client_key is None):
        raise InvalidArgument("tls: client_chain and client_key must be given together")
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # SVIDs have a URI SAN, not a DNS name; see verify_peer_spiffe_id
    ctx.verify_mode = ssl.CERT_REQUIRED
    _load_trust(ctx, trust_bundle)
    if client_chain is not None and client_key is not None:
        if isinstance(client_key, TlsProviderKey):
            # The bundle's roots and the CA chain that issued us also sign the server's chain.
            client_key.check_peer_keys([*trust_bundle, *client_chain[1:]])
        _load_identity(ctx, client_chain, client_key)
    return ctx


def spiffe_id_of(cert: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID of an X509-SVID: its one and only URI SAN."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        raise InvalidSvid(
            f"tls: peer certificate has no URI SAN (subject={cert.subject.rfc4514_string()!r})"
        ) from None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise InvalidSvid(
            f"tls: peer certificate must have exactly one URI SAN, has {len(uris)} "
            f"(subject={cert.subject.rfc4514_string()!r})"
        )
    return SpiffeId.parse(uris[0])


def peer_leaf(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> x509.Certificate | None:
    """The verified peer leaf certificate, or None when the peer sent none."""
    der = ssl_object.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der) if der else None


def verify_peer_spiffe_id(
    ssl_object: ssl.SSLObject | ssl.SSLSocket, expected: IdMatcher
) -> SpiffeId:
    """Check the peer's SPIFFE ID after the handshake; raise PeerIdentityError otherwise."""
    leaf = peer_leaf(ssl_object)
    if leaf is None:
        raise PeerIdentityError("tls: peer presented no certificate")
    try:
        actual = spiffe_id_of(leaf)
    except InvalidArgument as exc:
        raise PeerIdentityError(str(exc)) from None
    ok = actual == expected if isinstance(expected, SpiffeId) else expected(actual)
    if not ok:
        want = str(expected) if isinstance(expected, SpiffeId) else "the caller's rule"
        raise PeerIdentityError(f"tls: peer SPIFFE ID {actual} does not match {want}")
    return actual


HTTP_ALPN = ["http/1.1"]


def https_server_context(chain: Sequence[x509.Certificate], key: PrivateKey) -> ssl.SSLContext:
    """A TLS server context for HTTPS (the SPIFFE bundle endpoint): serves ``chain``, asks
    nothing of the client (the bundle is public), no resumption."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= _NO_RESUMPTION_COMPRESSION_RENEGOTIATION
    ctx.set_alpn_protocols(HTTP_ALPN)
    ctx.verify_mode = ssl.CERT_NONE
    ctx.num_tickets = 0
    _load_identity(ctx, chain, key)
    return ctx


def https_server_context_from_files(cert_path: Path, key_path: Path, where: str) -> ssl.SSLContext:
    """:func:`https_server_context` for a PEM chain and an unencrypted PEM key read from files;
    ConfigError naming the setting ``where`` when they cannot be loaded."""
    try:
        chain = x509.load_pem_x509_certificates(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        return https_server_context(chain, key)  # type: ignore[arg-type]
    except (OSError, ValueError, TypeError, FailedPrecondition) as exc:
        raise ConfigError(f"{where}: cannot load {cert_path} and {key_path}: {exc}") from None


def https_spiffe_client_context(trust_bundle: Sequence[x509.Certificate]) -> ssl.SSLContext:
    """A client context for an https_spiffe peer: its chain must end at one of the bundle's
    authorities (trust anchors, root or not, hence partial chains), no host-name check; the
    caller then holds the peer to its SPIFFE ID with :func:`verify_peer_spiffe_id`."""
    if not trust_bundle:
        raise InvalidArgument("tls: client trust bundle is empty; nothing could be verified")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= _NO_RESUMPTION_COMPRESSION_RENEGOTIATION
    ctx.set_alpn_protocols(HTTP_ALPN)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    _load_trust(ctx, trust_bundle)
    return ctx


def https_web_client_context() -> ssl.SSLContext:
    """A client context for an https_web peer: the system's web roots and host-name check."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(HTTP_ALPN)
    return ctx
