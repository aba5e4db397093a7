"""A fresh SoftHSM2 token for the dev server's CA keys (``KeyManager "pkcs11"``)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from plastron.devkit.processes import DevKitError

# Where distributions' softhsm2 packages put the PKCS#11 module; PLASTRON_SOFTHSM2_MODULE overrides.
MODULE_CANDIDATES = (
    Path("/usr/lib/softhsm/libsofthsm2.so"),
    Path("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"),
    Path("/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so"),
    Path("/usr/local/lib/softhsm/libsofthsm2.so"),
)
TOKEN_LABEL = "plastron-dev"  # noqa: S105 (a label, not a secret)


@dataclass(frozen=True)
class SoftHsmToken:
    module_path: Path
    conf_path: Path  # SOFTHSM2_CONF for every process that opens the token
    pin_file: Path
    label: str = TOKEN_LABEL

    @property
    def env(self) -> dict[str, str]:
        return {"SOFTHSM2_CONF": str(self.conf_path)}

    def key_manager_block(self) -> str:
        return (
            f'KeyManager "pkcs11" {{ plugin_data {{ module_path = "{self.module_path}" '
            f'token_label = "{self.label}" pin_file = "{self.pin_file}" }} }}'
        )


def find_module() -> Path | None:
    override = os.environ.get("PLASTRON_SOFTHSM2_MODULE")
    if override:
        return Path(override) if Path(override).exists() else None
    return next((p for p in MODULE_CANDIDATES if p.exists()), None)


def require_softhsm() -> Path:
    """The module path, or DevKitError naming the package to install."""
    module = find_module()
    if module is None or shutil.which("softhsm2-util") is None:
        raise DevKitError("SoftHSM2 is not installed: install the softhsm2 package")
    return module


def init_token(directory: Path) -> SoftHsmToken:
    """A token store of its own under ``directory`` and one initialised token, random PINs."""
    module = require_softhsm()
    tokens = directory / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    pin = secrets.token_hex(8)
    pin_file = directory / "pin"
    pin_file.touch(mode=0o600)
    pin_file.write_text(pin + "\n")
    token = SoftHsmToken(module, conf, pin_file)
    cmd = ["softhsm2-util", "--init-token", "--free", "--label", TOKEN_LABEL]
    cmd += ["--pin", pin, "--so-pin", secrets.token_hex(8)]
    env = {**os.environ, **token.env}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)
    if proc.returncode != 0:
        raise DevKitError(f"softhsm2-util --init-token failed: {proc.stderr.strip()}")
    return token
