"""tpm2-abrmd in front of a test swtpm: a TPM resource manager, as ``/dev/tpmrm0`` is on a host.

swtpm serves one client connection at a time and holds three transient objects. The agent's
``tpm`` KeyManager needs more: the agent (tpm2-pytss) and its TLS stack (the tpm2-openssl
provider inside Python's ssl) use the TPM side by side. tpm2-abrmd multiplexes connections and
swaps objects in and out, like the kernel's resource manager behind ``/dev/tpmrm0``.

Each instance runs its own D-Bus session daemon (no system bus needed, works as root or not) and
registers a unique bus name; clients use ``tcti`` with ``env`` (the session bus address).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

START_DEADLINE_S = 20.0


class AbrmdProcess:
    """A private dbus-daemon plus ``tpm2-abrmd --tcti=<swtpm>``; stop() ends both."""

    def __init__(self, swtpm_tcti: str, workdir: Path) -> None:
        self.swtpm_tcti = swtpm_tcti
        self.workdir = workdir
        self.bus_name = f"com.intel.tss2.Tabrmd.t{secrets.token_hex(6)}"
        self.bus_address = ""
        self._dbus: subprocess.Popen[bytes] | None = None
        self._abrmd: subprocess.Popen[bytes] | None = None
        self._logs: list[IO[bytes]] = []

    def _log(self, name: str) -> IO[bytes]:
        f = (self.workdir / name).open("wb")
        self._logs.append(f)
        return f

    @property
    def tcti(self) -> str:
        return f"tabrmd:bus_name={self.bus_name},bus_type=session"

    @property
    def env(self) -> dict[str, str]:
        """What a client process needs in its environment to reach this instance."""
        return {"DBUS_SESSION_BUS_ADDRESS": self.bus_address}

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        address = f"unix:path={self.workdir / 'bus'}"
        self._dbus = subprocess.Popen(
            ["dbus-daemon", "--session", "--nofork", "--nopidfile", f"--address={address}"],
            stdout=subprocess.DEVNULL,
            stderr=self._log("dbus.log"),
            start_new_session=True,
        )
        self.bus_address = address
        self._wait((self.workdir / "bus").exists, "dbus-daemon socket")
        cmd = ["tpm2-abrmd", "--session", f"--dbus-name={self.bus_name}"]
        cmd += [f"--tcti={self.swtpm_tcti}", "--flush-all"]
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        self._abrmd = subprocess.Popen(
            cmd,
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=self._log("abrmd.log"),
            start_new_session=True,
        )
        self._wait(self._answers, "tpm2-abrmd")

    def _answers(self) -> bool:
        proc = subprocess.run(
            ["tpm2_getrandom", "-T", self.tcti, "--hex", "4"],
            env={**os.environ, **self.env},
            capture_output=True,
            timeout=10,
            check=False,
        )
        return proc.returncode == 0

    def _wait(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            for proc in (self._dbus, self._abrmd):
                if proc is not None and proc.poll() is not None:
                    logs = " ".join(
                        p.read_text(errors="replace")[-500:] for p in self.workdir.glob("*.log")
                    )
                    raise RuntimeError(f"{what}: exited with {proc.returncode}: {logs}")
            if ready():
                return
            time.sleep(0.02)  # polling with a deadline
        raise RuntimeError(f"{what} was not ready within {START_DEADLINE_S}s")

    def stop(self) -> None:
        for proc in (self._abrmd, self._dbus):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        self._abrmd = self._dbus = None
        for f in self._logs:
            f.close()
        self._logs.clear()
