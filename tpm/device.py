"""The agent's TPM: ESAPI work with strict handle hygiene (tpm2-pytss, blocking calls).

Every operation takes the device lock, flushes transient objects and sessions left by anyone
(swtpm has three object slots and no resource manager; a crashed run leaves them full), does its
work and flushes what it loaded in ``finally``. Keys live between operations only as blobs
(TPM2B_PRIVATE/TPM2B_PUBLIC) wrapped by their parent, so nothing stays loaded. One ESAPI context
per thread. Callers on asyncio use ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
from tpm2_pytss.constants import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_CAP,
    TPM2_HC,
    TPM2_RH,
    TPM2_SE,
    TPM2_ST,
    TPMA_OBJECT,
)
from tpm2_pytss.types import (
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPMT_PUBLIC,
    TPMT_SIG_SCHEME,
    TPMT_SYM_DEF,
    TPMT_TK_HASHCHECK,
)
from tpm2_pytss.utils import NoSuchIndex, NVReadEK, create_ek_template

from plastron.errors import AttestationFailed, PlastronError, Unavailable
from plastron.tpm.blobs import EK_TYPES, EkInfo, KeyBlob, Quote
from plastron.tpm.tcti import Tcti

__all__ = ["EK_TYPES", "EkInfo", "KeyBlob", "Quote", "TpmDevice"]

# libtss2 logs each failed NV probe as an error; probing is expected, so keep it quiet.
os.environ.setdefault("TSS2_LOG", "all+none")

AK_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.SIGN_ENCRYPT
)
# Storage root key in the owner hierarchy: parent of DevID keys (deterministic: same key each time).
SRK_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.NODA
    | TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.DECRYPT
)
DEVID_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.SIGN_ENCRYPT
)
DEVID_TEMPLATES = {"ecc-p256": "ecc256:ecdsa-sha256", "rsa-2048": "rsa2048:rsassa-sha256"}
AK_TEMPLATES = {"ecc-p256": "ecc256:ecdsa-sha256:null", "rsa-2048": "rsa2048:rsassa-sha256:null"}
PCR_READ_CHUNK = 8  # TPM2_PCR_Read returns at most 8 digests per call

_TCTI_LAYER = 10 << 16
_IO_BASE_CODES = frozenset({8, 9, 10})  # NO_CONNECTION, TRY_AGAIN, IO_ERROR
_device_locks: dict[str, threading.Lock] = {}
_device_locks_guard = threading.Lock()

T = TypeVar("T")


def is_unreachable(exc: TSS2_Exception) -> bool:
    rc = int(exc.rc)
    return (rc & 0xFF0000) == _TCTI_LAYER or (rc & 0xFFFF) in _IO_BASE_CODES


def _ak_template(key_type: str, attributes: int) -> TPM2B_PUBLIC:
    try:
        spec = AK_TEMPLATES[key_type]
    except KeyError:
        raise AttestationFailed(f"tpm: unknown AK type {key_type!r}") from None
    return TPM2B_PUBLIC(publicArea=TPMT_PUBLIC.parse(spec, objectAttributes=attributes))


class TpmDevice:
    """One TPM reached through a TCTI; all methods block."""

    def __init__(self, tcti: Tcti | str) -> None:
        self.tcti = tcti if isinstance(tcti, Tcti) else Tcti.parse(tcti)
        with _device_locks_guard:
            self._lock = _device_locks.setdefault(str(self.tcti), threading.Lock())
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"TpmDevice({self.tcti})"

    # ---- plumbing --------------------------------------------------------------------------

    def _context(self) -> ESAPI:
        ctx: ESAPI | None = getattr(self._local, "ctx", None)
        if ctx is None:
            tcti = TCTILdr(self.tcti.name, self.tcti.conf)
            try:
                ctx = ESAPI(tcti)
            except BaseException:
                tcti.close()
                raise
            self._local.ctx, self._local.tcti_loader = ctx, tcti
        return ctx

    def _drop_context(self) -> None:
        """Finalise the thread's ESAPI context and close its TCTI: ESAPI closes only a TCTI it
        loaded itself from a string, so the loader would otherwise keep its connection (on a
        raw /dev/tpm0, which takes one open at a time, the device would stay busy)."""
        ctx: ESAPI | None = getattr(self._local, "ctx", None)
        tcti: TCTILdr | None = getattr(self._local, "tcti_loader", None)
        self._local.ctx = self._local.tcti_loader = None
        if ctx is not None:
            with contextlib.suppress(Exception):
                ctx.close()
        if tcti is not None:
            with contextlib.suppress(Exception):
                tcti.close()

    def run(
        self,
        what: str,
        work: Callable[[ESAPI], T],
        failure: type[PlastronError] = AttestationFailed,
        unavailable: type[Unavailable] = Unavailable,
    ) -> T:
        """Run ``work`` under the device lock with a clean TPM; map TSS errors to ``unavailable``
        (TPM unreachable; the context is dropped so the next call reconnects) or ``failure``."""
        with self._lock:
            try:
                ctx = self._context()
                self._flush_all(ctx)
                return work(ctx)
            except TSS2_Exception as exc:
                if is_unreachable(exc):
                    self._drop_context()
                    raise unavailable(
                        f"tpm: TPM at {self.tcti} is not reachable during {what} ({exc})"
                    ) from None
                raise failure(f"tpm: {what} failed in the TPM ({exc})") from None

    def probe(self) -> None:
        """TPM2_GetRandom over a connection of its own, closed after: is the TPM answering?

        GetRandom rather than GetCapability because a TPM in failure mode still answers
        GetCapability. Nothing is loaded, so nothing is flushed; the device lock keeps the probe
        out of the middle of this process's own TPM work (a single-client TCTI would refuse a
        second connection). Raises :class:`Unavailable` naming the TCTI and the TSS error."""
        with self._lock:
            try:
                with TCTILdr(self.tcti.name, self.tcti.conf) as tcti, ESAPI(tcti) as ctx:
                    ctx.get_random(8)
            except TSS2_Exception as exc:
                raise Unavailable(f"tpm: TPM at {self.tcti} does not answer ({exc})") from None

    @staticmethod
    def _flush_all(ctx: ESAPI) -> None:
        for first in (TPM2_HC.TRANSIENT_FIRST, TPM2_HC.LOADED_SESSION_FIRST):
            _, data = ctx.get_capability(TPM2_CAP.HANDLES, first, 64)
            for handle in data.data.handles:
                tr = ctx.tr_from_tpmpublic(handle)
                with contextlib.suppress(TSS2_Exception):
                    ctx.flush_context(tr)

    @staticmethod
    @contextlib.contextmanager
    def loaded(ctx: ESAPI, handle: ESYS_TR) -> Iterator[ESYS_TR]:
        try:
            yield handle
        finally:
            with contextlib.suppress(TSS2_Exception):
                ctx.flush_context(handle)

    @staticmethod
    @contextlib.contextmanager
    def ek_auth(ctx: ESAPI, ek_public: TPMT_PUBLIC) -> Iterator[ESYS_TR]:
        """Authorization for using the EK: password for high-range EKs (userWithAuth), else a
        fresh policy session satisfying PolicySecret(TPM_RH_ENDORSEMENT)."""
        if ek_public.objectAttributes & TPMA_OBJECT.USERWITHAUTH:
            yield ESYS_TR.PASSWORD
            return
        sess = ctx.start_auth_session(
            ESYS_TR.NONE,
            ESYS_TR.NONE,
            TPM2_SE.POLICY,
            TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
            ek_public.nameAlg,
        )
        try:
            ctx.policy_secret(ESYS_TR.ENDORSEMENT, sess, b"", b"", b"", 0)
            yield sess
        finally:
            with contextlib.suppress(TSS2_Exception):
                ctx.flush_context(sess)

    # ---- endorsement key -------------------------------------------------------------------

    @staticmethod
    def _ek_template(ctx: ESAPI, ek_type: str) -> tuple[bytes | None, TPM2B_PUBLIC | None]:
        """The EK certificate (if in NV) and template; no template for a high-range EK type
        without a certificate (the TCG profile defines those EKs only with one)."""
        try:
            name = EK_TYPES[ek_type]
        except KeyError:
            raise AttestationFailed(
                f"tpm: unknown EK type {ek_type!r}; expected one of {', '.join(EK_TYPES)}"
            ) from None
        try:
            cert, template = create_ek_template(name, NVReadEK(ctx))
        except (ValueError, NoSuchIndex):
            return None, None
        return (bytes(cert) if cert else None), template

    def _create_ek(self, ctx: ESAPI, ek_type: str) -> tuple[ESYS_TR, TPM2B_PUBLIC, bytes | None]:
        cert, template = self._ek_template(ctx, ek_type)
        if template is None:
            raise AttestationFailed(
                f"tpm: the TPM has no {ek_type} EK certificate (high-range EKs need one; "
                "rsa-2048 and ecc-p256 EKs work without, with ek_hash_path on the server)"
            )
        ek, ek_pub, *_ = ctx.create_primary(TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.ENDORSEMENT)
        return ek, ek_pub, cert

    def _choose_ek(self, ctx: ESAPI, ek_type: str) -> str:
        if ek_type != "auto":
            return ek_type
        for candidate in EK_TYPES:
            cert, _ = self._ek_template(ctx, candidate)
            if cert is not None:
                return candidate
        return next(iter(EK_TYPES))

    def read_ek(self, ek_type: str = "auto") -> EkInfo:
        """The EK public and certificate; ``auto`` picks the first EK type that has a cert."""

        def work(ctx: ESAPI) -> EkInfo:
            chosen = self._choose_ek(ctx, ek_type)
            ek, ek_pub, cert = self._create_ek(ctx, chosen)
            with self.loaded(ctx, ek):
                return EkInfo(chosen, ek_pub.marshal(), cert)

        return self.run("reading the EK", work)

    def enroll(self, ek_type: str = "auto", ak_type: str = "ecc-p256") -> tuple[EkInfo, KeyBlob]:
        """Read the EK and create an AK under it in one pass (one EK regeneration)."""
        template = _ak_template(ak_type, AK_ATTRIBUTES)

        def work(ctx: ESAPI) -> tuple[EkInfo, KeyBlob]:
            chosen = self._choose_ek(ctx, ek_type)
            ek, ek_pub, cert = self._create_ek(ctx, chosen)
            with self.loaded(ctx, ek), self.ek_auth(ctx, ek_pub.publicArea) as auth:
                priv, pub, *_ = ctx.create(ek, TPM2B_SENSITIVE_CREATE(), template, session1=auth)
            info = EkInfo(chosen, ek_pub.marshal(), cert)
            return info, KeyBlob(priv.marshal(), pub.marshal())

        return self.run("reading the EK and creating the AK", work)

    # ---- attestation key -------------------------------------------------------------------

    def create_ak(
        self, ek_type: str, key_type: str = "ecc-p256", attributes: int = AK_ATTRIBUTES
    ) -> KeyBlob:
        """A restricted signing key under the EK; ``attributes`` is overridable for tests."""
        template = _ak_template(key_type, attributes)

        def work(ctx: ESAPI) -> KeyBlob:
            ek, ek_pub, _ = self._create_ek(ctx, ek_type)
            with self.loaded(ctx, ek), self.ek_auth(ctx, ek_pub.publicArea) as auth:
                priv, pub, *_ = ctx.create(ek, TPM2B_SENSITIVE_CREATE(), template, session1=auth)
            return KeyBlob(priv.marshal(), pub.marshal())

        return self.run("creating the AK", work)

    def _load_ak(self, ctx: ESAPI, ek: ESYS_TR, ek_pub: TPM2B_PUBLIC, ak: KeyBlob) -> ESYS_TR:
        priv, _ = TPM2B_PRIVATE.unmarshal(ak.private)
        pub, _ = TPM2B_PUBLIC.unmarshal(ak.public)
        with self.ek_auth(ctx, ek_pub.publicArea) as auth:
            return ctx.load(ek, priv, pub, session1=auth)

    def _activate(
        self, ctx: ESAPI, ek_type: str, ak: KeyBlob, id_object: bytes, encrypted_secret: bytes
    ) -> tuple[bytes, ESYS_TR]:
        """ActivateCredential; returns the secret and the still-loaded AK (EK flushed)."""
        blob, _ = TPM2B_ID_OBJECT.unmarshal(id_object)
        secret, _ = TPM2B_ENCRYPTED_SECRET.unmarshal(encrypted_secret)
        ek, ek_pub, _ = self._create_ek(ctx, ek_type)
        with self.loaded(ctx, ek):
            ak_handle = self._load_ak(ctx, ek, ek_pub, ak)
            try:
                with self.ek_auth(ctx, ek_pub.publicArea) as auth:
                    cred = ctx.activate_credential(
                        ak_handle, ek, blob, secret, session1=ESYS_TR.PASSWORD, session2=auth
                    )
            except BaseException:
                with contextlib.suppress(TSS2_Exception):
                    ctx.flush_context(ak_handle)
                raise
        return bytes(cred), ak_handle

    def activate_credential(
        self, ek_type: str, ak: KeyBlob, id_object: bytes, encrypted_secret: bytes
    ) -> bytes:
        """TPM2_ActivateCredential: the secret, if the blob was made for this EK and this AK."""

        def work(ctx: ESAPI) -> bytes:
            secret, ak_handle = self._activate(ctx, ek_type, ak, id_object, encrypted_secret)
            ctx.flush_context(ak_handle)
            return secret

        return self.run("ActivateCredential", work)

    def activate_and_quote(
        self,
        ek_type: str,
        ak: KeyBlob,
        id_object: bytes,
        encrypted_secret: bytes,
        *,
        nonce: bytes,
        pcrs: list[int],
    ) -> tuple[bytes, Quote]:
        """ActivateCredential then Quote with the same loaded AK (one EK regeneration)."""
        selection = "sha256:" + ",".join(str(i) for i in sorted(pcrs))

        def work(ctx: ESAPI) -> tuple[bytes, Quote]:
            secret, ak_handle = self._activate(ctx, ek_type, ak, id_object, encrypted_secret)
            with self.loaded(ctx, ak_handle):
                attest, sig = ctx.quote(ak_handle, selection, nonce)
            quote = Quote(attest.marshal(), sig.marshal(), self._read_pcrs(ctx, sorted(pcrs)))
            return secret, quote

        return self.run("ActivateCredential", work)

    def quote(self, ek_type: str, ak: KeyBlob, nonce: bytes, pcrs: list[int]) -> Quote:
        """TPM2_Quote over sha256 PCRs ``pcrs`` with ``nonce`` as qualifying data, plus values."""
        selection = "sha256:" + ",".join(str(i) for i in sorted(pcrs))

        def work(ctx: ESAPI) -> Quote:
            ek, ek_pub, _ = self._create_ek(ctx, ek_type)
            with self.loaded(ctx, ek):
                ak_handle = self._load_ak(ctx, ek, ek_pub, ak)
            with self.loaded(ctx, ak_handle):
                attest, sig = ctx.quote(ak_handle, selection, nonce)
            return Quote(attest.marshal(), sig.marshal(), self._read_pcrs(ctx, sorted(pcrs)))

        return self.run("quote", work)

    @staticmethod
    def _read_pcrs(ctx: ESAPI, pcrs: list[int]) -> dict[int, bytes]:
        values: dict[int, bytes] = {}
        for start in range(0, len(pcrs), PCR_READ_CHUNK):
            chunk = pcrs[start : start + PCR_READ_CHUNK]
            _, _, digests = ctx.pcr_read("sha256:" + ",".join(str(i) for i in chunk))
            got = [bytes(d) for d in digests]
            if len(got) != len(chunk):
                raise AttestationFailed(f"tpm: TPM returned {len(got)} PCRs for {chunk}")
            values.update(zip(chunk, got, strict=True))
        return values

    # ---- DevID keys (owner hierarchy, under the SRK) ---------------------------------------

    @staticmethod
    def _create_srk(ctx: ESAPI) -> ESYS_TR:
        template = TPM2B_PUBLIC(
            publicArea=TPMT_PUBLIC.parse("ecc256:aes128cfb", objectAttributes=SRK_ATTRIBUTES)
        )
        srk, *_ = ctx.create_primary(TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.OWNER)
        return srk

    def load_devid(self, ctx: ESAPI, devid: KeyBlob) -> ESYS_TR:
        """Load a DevID blob under the SRK; the caller flushes the handle."""
        priv, _ = TPM2B_PRIVATE.unmarshal(devid.private)
        pub, _ = TPM2B_PUBLIC.unmarshal(devid.public)
        with self.loaded(ctx, self._create_srk(ctx)) as srk:
            return ctx.load(srk, priv, pub)

    def create_devid(self, key_type: str = "ecc-p256") -> KeyBlob:
        """A DevID-style signing key under the SRK (provisioning; tests)."""
        template = TPM2B_PUBLIC(
            publicArea=TPMT_PUBLIC.parse(
                DEVID_TEMPLATES[key_type], objectAttributes=DEVID_ATTRIBUTES
            )
        )

        def work(ctx: ESAPI) -> KeyBlob:
            with self.loaded(ctx, self._create_srk(ctx)) as srk:
                priv, pub, *_ = ctx.create(srk, TPM2B_SENSITIVE_CREATE(), template)
            return KeyBlob(priv.marshal(), pub.marshal())

        return self.run("creating the DevID key", work)

    def certify(
        self, ek_type: str, ak: KeyBlob, devid: KeyBlob, nonce: bytes = b""
    ) -> tuple[bytes, bytes]:
        """TPM2_Certify of the DevID key by the AK → (TPMS_ATTEST, TPMT_SIGNATURE)."""

        def work(ctx: ESAPI) -> tuple[bytes, bytes]:
            devid_handle = self.load_devid(ctx, devid)
            with self.loaded(ctx, devid_handle):
                ek, ek_pub, _ = self._create_ek(ctx, ek_type)
                with self.loaded(ctx, ek):
                    ak_handle = self._load_ak(ctx, ek, ek_pub, ak)
                with self.loaded(ctx, ak_handle):
                    info, sig = ctx.certify(
                        devid_handle, ak_handle, nonce, TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL)
                    )
            return bytes(info.marshal())[2:], sig.marshal()

        return self.run("certify", work)

    def sign_digest(self, devid: KeyBlob, digest: bytes) -> bytes:
        """Sign a SHA-256 digest with the DevID key in its own scheme → TPMT_SIGNATURE."""
        ticket = TPMT_TK_HASHCHECK(tag=TPM2_ST.HASHCHECK, hierarchy=TPM2_RH.NULL)

        def work(ctx: ESAPI) -> bytes:
            handle = self.load_devid(ctx, devid)
            with self.loaded(ctx, handle):
                sig = ctx.sign(handle, digest, TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL), ticket)
            return bytes(sig.marshal())

        return self.run("DevID signing", work)
