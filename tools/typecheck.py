"""Run mypy --strict on the product packages as they install (plastron.*).

mypy cannot follow setuptools' editable-install import hook, so this builds a tree of
symlinks under .build/typed/plastron that mirrors the installed layout and checks that.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROOMS = {"server": "server", "agent": "agent", "hsm": "hsm", "tpm": "tpm", "oidc": "oidc"}
# Test doubles that implement a product Protocol: checked too (linked in as top-level modules),
# so mypy proves they implement all of it.
TEST_DOUBLES = ("tests/datastore_faults.py",)


def build_tree() -> Path:
    top = ROOT / ".build" / "typed"
    pkg = top / "plastron"
    pkg.mkdir(parents=True, exist_ok=True)
    for entry in (ROOT / "plastron").iterdir():
        link = pkg / entry.name
        if not link.is_symlink():
            link.symlink_to(entry)
    for name, folder in ROOMS.items():
        link = pkg / name
        if not link.is_symlink():
            link.symlink_to(ROOT / folder)
    for path in TEST_DOUBLES:
        link = top / Path(path).name
        if not link.is_symlink():
            link.symlink_to(ROOT / path)
    # drop links whose target disappeared
    for link in pkg.iterdir():
        if link.is_symlink() and not link.exists():
            link.unlink()
    return top


def main() -> int:
    top = build_tree()
    env = dict(os.environ, MYPYPATH=str(top))
    cmd = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "-p",
        "plastron",
        *(arg for path in TEST_DOUBLES for arg in ("-m", Path(path).stem)),
    ]
    return subprocess.call(cmd, cwd=top, env=env)


if __name__ == "__main__":
    sys.exit(main())
