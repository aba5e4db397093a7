"""``plastron-server x509 mint -write DIR`` / ``jwt mint -write FILE`` never write into a file
or symlink someone else placed at the target: the target is replaced by a new file of ours."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

OTHER_UID = 65534  # nobody
VICTIM_TEXT = b"somebody else's file\n"


def _ok(result: Any) -> None:
    assert result.returncode == 0, f"rc={result.returncode} stderr={result.stderr!r}"


def _is_ours_and_private(path: Path) -> os.stat_result:
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode), "the target must be a regular file, not a link"
    assert st.st_uid == os.geteuid()
    assert stat.S_IMODE(st.st_mode) == 0o600
    return st


def test_x509_mint_replaces_a_planted_symlink_and_a_foreign_file(
    plastron_server: Any, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(VICTIM_TEXT)
    (out / "key.pem").symlink_to(victim)
    foreign = out / "svid.pem"
    foreign.write_bytes(b"planted\n")
    os.chown(foreign, OTHER_UID, OTHER_UID)
    foreign.chmod(0o644)
    with open(foreign, "rb") as planted:  # the other user's handle on the old file
        _ok(
            plastron_server.run_cli(
                "x509", "mint", "-spiffeID", "spiffe://example.org/w", "-write", str(out)
            )
        )
        assert planted.read() == b"planted\n", "the old inode must not receive the SVID"
    assert victim.read_bytes() == VICTIM_TEXT, "the link's target must be left alone"
    _is_ours_and_private(out / "key.pem")
    serialization.load_pem_private_key((out / "key.pem").read_bytes(), password=None)
    svid = os.lstat(foreign)
    assert stat.S_ISREG(svid.st_mode) and svid.st_uid == os.geteuid()
    assert stat.S_IMODE(svid.st_mode) == 0o644  # a certificate, as before
    assert b"BEGIN CERTIFICATE" in foreign.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["bundle.pem", "key.pem", "svid.pem"]


def test_jwt_mint_replaces_a_planted_symlink(plastron_server: Any, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(VICTIM_TEXT)
    target = tmp_path / "token.jwt"
    target.symlink_to(victim)
    mint = ["jwt", "mint", "-spiffeID", "spiffe://example.org/w", "-audience", "a"]
    _ok(plastron_server.run_cli(*mint, "-write", str(target)))
    assert victim.read_bytes() == VICTIM_TEXT
    _is_ours_and_private(target)
    assert target.read_text().count(".") == 2  # a compact JWS


def test_write_into_a_missing_directory_is_one_clear_line(
    plastron_server: Any, tmp_path: Path
) -> None:
    missing = tmp_path / "missing"
    result = plastron_server.run_cli(
        "x509", "mint", "-spiffeID", "spiffe://example.org/w", "-write", str(missing)
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert f"unable to write {missing / 'svid.pem'}" in line, line
    assert ".tmp" not in line
