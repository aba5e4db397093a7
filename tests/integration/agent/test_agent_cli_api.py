"""``plastron-agent api …`` / ``healthcheck`` against a real Workload API socket."""

from __future__ import annotations

import asyncio
import io
import os
import stat
from pathlib import Path

from agent_authority import entry
from agent_workload_env import WorkloadApiEnv
from cryptography import x509

from plastron.agent.cli.main import main

UID = f"unix:uid:{os.geteuid()}"


async def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = await asyncio.to_thread(main, list(argv), out)
    return code, out.getvalue()


def _identity(env: WorkloadApiEnv) -> None:
    env.cache.set_entries([entry("w", env.ca.td, "/web", UID)])
    env.cache.set_x509_svids({"w": env.ca.svid("/web")})


async def test_fetch_x509_prints_and_writes(workload_api: WorkloadApiEnv, tmp_path: Path) -> None:
    _identity(workload_api)
    code, out = await _cli(
        "api", "fetch", "x509", "-socketPath", workload_api.socket_path, "-write", str(tmp_path)
    )
    assert code == 0, out
    assert "Received 1 svid after" in out and "spiffe://example.org/web" in out
    leaf = x509.load_pem_x509_certificates((tmp_path / "svid.0.pem").read_bytes())[0]
    assert leaf == workload_api.cache.x509_svid("w").leaf  # type: ignore[union-attr]
    bundle = x509.load_pem_x509_certificates((tmp_path / "bundle.0.pem").read_bytes())
    assert bundle == [workload_api.ca.ca]
    assert stat.S_IMODE(os.stat(tmp_path / "svid.0.key").st_mode) == 0o600


async def test_fetch_and_validate_jwt(workload_api: WorkloadApiEnv) -> None:
    _identity(workload_api)
    sock = workload_api.socket_path
    code, out = await _cli("api", "fetch", "jwt", "-audience", "db", "-socketPath", sock)
    assert code == 0, out
    token = out.split("token(spiffe://example.org/web):\n\t", 1)[1].split("\n", 1)[0]
    code, out = await _cli(
        "api", "validate", "jwt", "-audience", "db", "-svid", token, "-socketPath", sock
    )
    assert code == 0 and "SVID is valid." in out and "spiffe://example.org/web" in out
    code, _ = await _cli(
        "api", "validate", "jwt", "-audience", "nope", "-svid", token, "-socketPath", sock
    )
    assert code == 1


async def test_fetch_without_identity_fails(workload_api: WorkloadApiEnv) -> None:
    code, _ = await _cli("api", "fetch", "x509", "-socketPath", workload_api.socket_path)
    assert code == 1


async def test_healthcheck(workload_api: WorkloadApiEnv, tmp_path: Path) -> None:
    code, out = await _cli("healthcheck", "-socketPath", workload_api.socket_path)
    assert code == 0 and "Agent is healthy." in out
    code, out = await _cli("healthcheck", "-socketPath", str(tmp_path / "none.sock"))
    assert code == 1 and "unhealthy" in out


async def test_fetch_x509_write_replaces_planted_links_and_foreign_files(
    workload_api: WorkloadApiEnv, tmp_path: Path
) -> None:
    """A symlink or a file another user planted at a target is replaced, never written into."""
    _identity(workload_api)
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"victim\n")
    (out / "svid.0.key").symlink_to(victim)
    foreign = out / "svid.0.pem"
    foreign.write_bytes(b"planted\n")
    os.chown(foreign, 65534, 65534)
    foreign.chmod(0o644)
    with open(foreign, "rb") as planted:  # the other user's handle on the old file
        code, printed = await _cli(
            "api", "fetch", "x509", "-socketPath", workload_api.socket_path, "-write", str(out)
        )
        assert code == 0, printed
        assert planted.read() == b"planted\n"
    assert victim.read_bytes() == b"victim\n"
    for name, mode in [("svid.0.key", 0o600), ("svid.0.pem", 0o644)]:
        st = os.lstat(out / name)
        assert stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()
        assert stat.S_IMODE(st.st_mode) == mode
    assert b"PRIVATE KEY" in (out / "svid.0.key").read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["bundle.0.pem", "svid.0.key", "svid.0.pem"]
