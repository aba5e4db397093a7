"""Manufacturing swtpm instances (no pytest): a test manufacturer CA, EK certificates it signs
through ``swtpm_setup --create-ek-cert``, and ``swtpm socket`` on a unix socket.

The manufacturer CA and the ``swtpm_setup`` run are the product's (``plastron.devkit.swtpm``,
which ``plastron-dev up`` and ``make demo`` use); this module adds what tests need around them.
Used by the pytest fixtures (swtpm_fixtures.py) and the benchmarks.

``make_manufacturer_ca(dir)`` an EC P-256 "TPM manufacturer" root; ``manufacture(dir, ca)`` a TPM
state with fresh EKs (RSA-2048 EK cert at NV 0x01c00002, ECC P-384 at 0x01c00016, both also
written as ``ek-rsa2048.crt``/``ek-secp384r1.crt`` in ``<dir>-conf``); ``SwtpmProcess(dir)`` serves
it; ``start_copy(template, dest)`` serves a private copy; ``write_ek_cert(tcti, der, index)`` puts
a chosen certificate into NV (negative tests); ``issue_ek_cert(ca, public_key)``.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_NV
from tpm2_pytss.types import TPM2B_NV_PUBLIC, TPMS_NV_PUBLIC

from plastron.devkit.swtpm import ManufacturerCa, make_manufacturer_ca, manufacture

RSA_EK_CERT_INDEX = 0x01C00002
ECC_P256_EK_CERT_INDEX = 0x01C0000A
ECC_P384_EK_CERT_INDEX = 0x01C00016
START_DEADLINE_S = 10.0

__all__ = [
    "ManufacturerCa",
    "SwtpmProcess",
    "issue_ek_cert",
    "make_manufacturer_ca",
    "manufacture",
    "start_copy",
    "write_ek_cert",
]

# libtss2 logs every failed NV probe at error level; tests do not need that noise.
os.environ.setdefault("TSS2_LOG", "all+none")


class SwtpmProcess:
    """``swtpm socket`` serving one state directory on a unix socket."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.sock = state_dir / "tpm.sock"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def tcti(self) -> str:
        return f"swtpm:path={self.sock}"

    @property
    def pid(self) -> int | None:
        """The running swtpm's process id (None when it is not running)."""
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        self.sock.unlink(missing_ok=True)
        cmd = ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={self.state_dir}"]
        cmd += ["--server", f"type=unixio,path={self.sock}"]
        cmd += ["--ctrl", f"type=unixio,path={self.sock}.ctrl"]
        cmd += ["--flags", "not-need-init,startup-clear"]
        cmd += ["--log", f"file={self.state_dir / 'swtpm.log'},level=1"]
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"swtpm exited with {self._proc.returncode} at start")
            if self.sock.exists():
                with socket.socket(socket.AF_UNIX) as s:
                    try:
                        s.connect(str(self.sock))
                        return
                    except OSError:
                        pass
            time.sleep(0.005)  # polling a socket with a deadline, not waiting for a guess
        raise RuntimeError(f"swtpm did not open {self.sock} within {START_DEADLINE_S}s")

    def kill(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(timeout=10)
        self._proc = None

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        self._proc = None


def start_copy(template: Path, dest: Path) -> SwtpmProcess:
    """Copy a manufactured state (~6 KB) and serve it."""
    dest.mkdir(parents=True, exist_ok=True)
    for item in template.iterdir():
        if item.is_file() and item.name.startswith("tpm2-"):
            shutil.copy2(item, dest / item.name)
    proc = SwtpmProcess(dest)
    proc.start()
    return proc


def issue_ek_cert(
    ca: ManufacturerCa,
    public_key: ec.EllipticCurvePublicKey | object,
    *,
    model: str = "swtpm",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> x509.Certificate:
    """An EK certificate in the TCG shape (TCG EKU, critical dirName SAN) signed by ``ca``,
    valid from a day ago for a year unless told otherwise."""
    san_name = x509.Name(
        [
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.1"), "id:00001014"),
                    x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.2"), model),
                    x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.3"), "id:20191023"),
                ]
            )
        ]
    )
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(days=1))
        .not_valid_after(not_after or now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.ObjectIdentifier("2.23.133.8.1")]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName([x509.DirectoryName(san_name)]), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )


def write_ek_cert(tcti: str, der: bytes, index: int = RSA_EK_CERT_INDEX) -> None:
    """Replace the NV certificate at ``index`` with ``der`` (platform auth is empty on swtpm)."""
    name, _, conf = tcti.partition(":")
    with ESAPI(TCTILdr(name, conf)) as ectx:
        try:
            old = ectx.tr_from_tpmpublic(index)
            ectx.nv_undefine_space(old, ESYS_TR.PLATFORM)
        except TSS2_Exception:
            pass  # absent index is the normal case
        attrs = (
            TPMA_NV.PPWRITE
            | TPMA_NV.PPREAD
            | TPMA_NV.OWNERREAD
            | TPMA_NV.AUTHREAD
            | TPMA_NV.NO_DA
            | TPMA_NV.PLATFORMCREATE
        )
        pub = TPM2B_NV_PUBLIC(
            nvPublic=TPMS_NV_PUBLIC(
                nvIndex=index, nameAlg=TPM2_ALG.SHA256, attributes=attrs, dataSize=len(der)
            )
        )
        nvh = ectx.nv_define_space(b"", pub, auth_handle=ESYS_TR.PLATFORM)
        for off in range(0, len(der), 512):
            ectx.nv_write(nvh, der[off : off + 512], off, auth_handle=ESYS_TR.PLATFORM)
