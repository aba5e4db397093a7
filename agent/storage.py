"""The agent's persisted state: ``data_dir/agent-data.json`` (agent SVID, bundle, flags).

The agent's private key is not here: it lives in the agent's KeyManager under ``key_id``.
Writes are atomic (temp file, fsync, rename, fsync of the directory) and the file is 0600.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from plastron.errors import InvalidArgument, InvalidBundle
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.x509svid import MAX_CHAIN_CERTS

FILE_NAME = "agent-data.json"
MAX_STATE_BYTES = 8 * 1024 * 1024
_VERSION = 1


@dataclass(frozen=True)
class AgentState:
    svid_chain: tuple[x509.Certificate, ...]
    key_id: str
    bundle: Bundle
    reattestable: bool = False

    @property
    def expires_at(self) -> _dt.datetime:
        return self.svid_chain[0].not_valid_after_utc


class AgentStorage:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / FILE_NAME

    def load(self) -> AgentState | None:
        """The stored state, None when there is none; InvalidArgument when it is corrupt."""
        try:
            with self.path.open("rb") as fh:
                raw = fh.read(MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return None
        if len(raw) > MAX_STATE_BYTES:
            raise InvalidArgument(f"{self.path}: larger than {MAX_STATE_BYTES} bytes")
        try:
            doc = json.loads(raw)
            if doc.get("version") != _VERSION:
                raise InvalidArgument(f"{self.path}: unsupported version {doc.get('version')!r}")
            chain_b64 = doc["svid"]
            if not chain_b64 or len(chain_b64) > MAX_CHAIN_CERTS:
                raise InvalidArgument(f"{self.path}: svid chain must hold 1..{MAX_CHAIN_CERTS}")
            chain = tuple(x509.load_der_x509_certificate(base64.b64decode(c)) for c in chain_b64)
            bundle = Bundle.from_json(doc["bundle"].encode())
            key_id = doc["key_id"]
            reattestable = doc["reattestable"]
            if not isinstance(key_id, str) or not isinstance(reattestable, bool):
                raise InvalidArgument(f"{self.path}: key_id/reattestable have the wrong type")
        except (ValueError, KeyError, TypeError, AttributeError, InvalidBundle) as exc:
            raise InvalidArgument(f"{self.path}: agent state is corrupt ({exc})") from exc
        return AgentState(chain, key_id, bundle, reattestable)

    def save(self, state: AgentState) -> None:
        der = serialization.Encoding.DER
        doc = {
            "version": _VERSION,
            "svid": [base64.b64encode(c.public_bytes(der)).decode() for c in state.svid_chain],
            "key_id": state.key_id,
            "bundle": state.bundle.to_json().decode(),
            "reattestable": state.reattestable,
        }
        self._write(json.dumps(doc).encode())

    def delete_svid(self) -> None:
        """Forget the agent SVID (after a ban): the next start must attest again."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._fsync_dir()

    def _write(self, data: bytes) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.data_dir, prefix=".agent-data.")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(self.data_dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
