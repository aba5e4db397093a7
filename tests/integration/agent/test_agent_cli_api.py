"""``plastron-agent api …`` / ``healthcheck`` against a real Workload API socket."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from agent_authority import entry
from agent_workload_env import WorkloadApiEnv
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

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
    assert code == 1 and "unhealthy" in out and str(tmp_path / "none.sock") in out


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


async def test_fetch_alias_output_json_and_silent(
    workload_api: WorkloadApiEnv, tmp_path: Path
) -> None:
    """``api fetch`` is ``api fetch x509``; -output json prints the X509SVIDResponse with proto
    names as SPIRE does; -silent prints nothing and still writes -write's files."""
    _identity(workload_api)
    sock = workload_api.socket_path
    code, out = await _cli("api", "fetch", "-socketPath", sock)
    assert code == 0 and "Received 1 svid after" in out, out

    code, out = await _cli("api", "fetch", "-socketPath", sock, "-output", "json")
    assert code == 0, out
    doc = json.loads(out)
    (svid,) = doc["svids"]
    assert svid["spiffe_id"] == "spiffe://example.org/web"
    leaf = workload_api.cache.x509_svid("w").leaf  # type: ignore[union-attr]
    der = base64.b64decode(svid["x509_svid"])
    assert x509.load_der_x509_certificate(der[: len(leaf.public_bytes(Encoding.DER))]) == leaf
    assert set(doc) >= {"svids", "crl", "federated_bundles"}

    code, out = await _cli(
        "api", "fetch", "x509", "-silent", "-socketPath", sock, "-write", str(tmp_path)
    )
    assert code == 0 and out == ""
    assert (tmp_path / "svid.0.pem").exists()

    code, _ = await _cli("api", "fetch", "-output", "json", "-write", str(tmp_path))
    assert code == 1


async def test_jwt_commands_output_json_and_silent(workload_api: WorkloadApiEnv) -> None:
    _identity(workload_api)
    sock = workload_api.socket_path
    code, out = await _cli("api", "fetch", "jwt", "-audience", "db", "-socketPath", sock,
                           "-output", "json")  # fmt: skip
    assert code == 0, out
    svids, bundles = json.loads(out)
    token = svids["svids"][0]["svid"]
    assert svids["svids"][0]["spiffe_id"] == "spiffe://example.org/web"
    assert "example.org" in "".join(bundles["bundles"])

    validate = ("api", "validate", "jwt", "-audience", "db", "-svid", token, "-socketPath", sock)
    code, out = await _cli(*validate, "-output", "json")
    assert code == 0 and json.loads(out)["spiffe_id"] == "spiffe://example.org/web"
    assert await _cli(*validate, "-silent") == (0, "")
    code, out = await _cli("api", "fetch", "jwt", "-audience", "db", "-socketPath", sock,
                           "-silent")  # fmt: skip
    assert (code, out) == (0, "")


def test_missing_socket_error_names_the_socket(tmp_path: Path) -> None:
    missing = str(tmp_path / "absent.sock")
    for argv in (
        ("api", "fetch", "-socketPath", missing),
        ("api", "fetch", "jwt", "-audience", "a", "-socketPath", missing),
        ("api", "validate", "jwt", "-audience", "a", "-svid", "x", "-socketPath", missing),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "plastron.agent.cli.main", *argv],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith("Error: connection error: ") and missing in done.stderr


async def test_timeout_is_a_go_duration(workload_api: WorkloadApiEnv) -> None:
    _identity(workload_api)
    sock = workload_api.socket_path
    code, out = await _cli("api", "fetch", "-timeout", "1500ms", "-socketPath", sock)
    assert code == 0 and "Received 1 svid" in out
    for bad in ("5", "0s", "soon"):
        done = subprocess.run(
            [sys.executable, "-m", "plastron.agent.cli.main", "api", "fetch", "-timeout", bad],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
        assert "-timeout" in done.stderr
