"""SoftHSM2 tokens for tests and the demo.

The folder name has a hyphen, so importers add it to ``sys.path`` first (the HSM tests'
conftest does). Pytest fixtures, for a conftest to import::

    from softhsm_token import softhsm_dir, softhsm_token  # noqa: F401

``softhsm_dir`` (session scope): one SoftHSM2 directory per test process (each pytest-xdist
worker is a process) and ``SOFTHSM2_CONF`` pointing at it. SoftHSM reads that variable when
the module is first initialised in the process, so it is set before anything loads the module.

``softhsm_token`` (function scope): a fresh token with a unique label in that directory, as a
:class:`SoftHsmToken` (module_path, token_label, pin, pin_file, conf_path, token_dir);
``token.plugin_data()`` is ready for the ``pkcs11`` KeyManager.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pkcs11
import pytest

HERE = Path(__file__).resolve().parent
INIT_SCRIPT = HERE / "init-token.sh"
MODULE_PATH = os.environ.get("PLASTRON_PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so")


@dataclass(frozen=True)
class SoftHsmToken:
    module_path: str
    token_label: str
    pin: str
    pin_file: Path
    conf_path: Path
    token_dir: Path

    def __repr__(self) -> str:
        return f"SoftHsmToken(label={self.token_label!r}, conf={str(self.conf_path)!r})"

    def plugin_data(self, **extra: Any) -> dict[str, Any]:
        """``plugin_data`` for KeyManager "pkcs11" selecting this token by label."""
        data: dict[str, Any] = {
            "module_path": self.module_path,
            "token_label": self.token_label,
            "pin_file": str(self.pin_file),
        }
        data.update(extra)
        return data

    def env(self) -> dict[str, str]:
        """Environment for subprocesses (softhsm2-util, pkcs11-tool) that use this token."""
        return dict(os.environ, SOFTHSM2_CONF=str(self.conf_path))

    @contextmanager
    def removed(self) -> Iterator[None]:
        """The HSM gone: the token directory moved aside for the block, then put back."""
        aside = self.token_dir.with_name("tokens.removed")
        shutil.move(self.token_dir, aside)
        try:
            yield
        finally:
            shutil.move(aside, self.token_dir)


def use_softhsm_dir(base: Path) -> Path:
    """Make ``base`` this process's SoftHSM2 directory; returns the conf path.

    Refuses to switch once the module is loaded with another conf: SoftHSM would keep
    using the old token directory and tests would silently share tokens.
    """
    base.mkdir(parents=True, exist_ok=True)
    conf = base.resolve() / "softhsm2.conf"
    current = os.environ.get("SOFTHSM2_CONF")
    if current != str(conf):
        if MODULE_PATH in getattr(pkcs11, "_loaded", {}):
            raise RuntimeError(
                f"SoftHSM2 is already loaded with SOFTHSM2_CONF={current!r}; cannot switch to"
                f" {conf} in this process"
            )
        os.environ["SOFTHSM2_CONF"] = str(conf)
    return conf


def init_token(base: Path, label: str) -> SoftHsmToken:
    """Create token ``label`` under ``base`` (idempotent) with a random PIN in a 0600 file."""
    conf = use_softhsm_dir(base)
    pin_file = base / f"{label}.pin"
    subprocess.run(
        [str(INIT_SCRIPT), "-d", str(base), "-l", label, "-p", str(pin_file)],
        check=True,
        capture_output=True,
        env=dict(os.environ, SOFTHSM2_CONF=str(conf)),
    )
    return SoftHsmToken(
        module_path=MODULE_PATH,
        token_label=label,
        pin=pin_file.read_text().strip(),
        pin_file=pin_file,
        conf_path=conf,
        token_dir=base.resolve() / "tokens",
    )


@pytest.fixture(scope="session")
def softhsm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("softhsm")
    use_softhsm_dir(base)
    return base


@pytest.fixture
def softhsm_token(softhsm_dir: Path) -> Iterator[SoftHsmToken]:
    # tokens are not deleted afterwards: removing a token directory under a loaded SoftHSM
    # breaks slot listing for the whole process; the session directory goes at the end
    yield init_token(softhsm_dir, f"t-{uuid.uuid4().hex[:12]}")
