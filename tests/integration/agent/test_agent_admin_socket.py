"""The agent's admin socket (``admin_socket_path``) on a real agent and server, called with
the spire-api-sdk agent protos through grpcio (another gRPC stack than the agent's):
DelegatedIdentity hands an authorized delegate another workload's SVIDs by selectors and by
PID and refuses everyone else; Debug GetInfo describes the agent; Logger changes what the
agent logs."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from plastron.proto.spire.api.agent.debug.v1 import debug_pb2, debug_pb2_grpc
from plastron.proto.spire.api.agent.delegatedidentity.v1 import (
    delegatedidentity_pb2 as di_pb2,
)
from plastron.proto.spire.api.agent.delegatedidentity.v1 import (
    delegatedidentity_pb2_grpc as di_grpc,
)
from plastron.proto.spire.api.agent.logger.v1 import logger_pb2, logger_pb2_grpc
from plastron.proto.spire.api.types import logger_pb2 as types_logger
from plastron.proto.spire.api.types import selector_pb2
from plastron.spiffe.x509svid import spiffe_id_from_certificate
from tests.integration.agent.agent_processes import TD, AgentProcess, ServerProcess
from tests.processes import poll

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as other users")

NODE = f"spiffe://{TD}/node"
DELEGATE = f"spiffe://{TD}/delegate"
OTHER = f"spiffe://{TD}/other-workload"
ADMIN_OTHER = f"spiffe://{TD}/admin-workload"
NOBODY = 65534
NOBODY_WORKLOAD = f"spiffe://{TD}/nobody"
ADMIN_CALLER = Path(__file__).with_name("admin_caller.py")
OTHER_SELECTOR = selector_pb2.Selector(type="unix", value="uid:4242")


@dataclass
class Env:
    server: ServerProcess
    agent: AgentProcess
    admin_socket: Path


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    base = Path(tempfile.mkdtemp(prefix="pl-adm-", dir="/tmp"))
    base.chmod(0o755)  # uid 65534 runs the venv's python from here and reaches the socket
    (base / "s").mkdir()
    (base / "a").mkdir(mode=0o755)
    admin_socket = base / "admin" / "admin.sock"
    server = ServerProcess(base / "s")
    server.start()
    agent = AgentProcess(
        base / "a",
        server,
        agent_extra=f'admin_socket_path = "{admin_socket}"\n'
        f'  authorized_delegates = ["{DELEGATE}"]',
    )
    try:
        server.create_entry(NODE, DELEGATE, "unix:uid:0")
        server.create_entry(NODE, NOBODY_WORKLOAD, f"unix:uid:{NOBODY}")
        server.create_entry(NODE, OTHER, "unix:uid:4242")
        admin = server.cli(
            "entry",
            "create",
            "-parentID",
            NODE,
            "-spiffeID",
            ADMIN_OTHER,
            "-selector",
            "unix:uid:4242",
            "-selector",
            "unix:gid:4242",
            "-admin",
        )
        assert admin.returncode == 0, admin.stderr
        agent.start(server.join_token(NODE))
        poll("delegate entry synced", lambda: DELEGATE in agent.cli("api", "fetch").stdout)
        yield Env(server, agent, admin_socket)
    finally:
        agent.stop()
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def channel(env: Env) -> grpc.Channel:
    return grpc.insecure_channel(f"unix:{env.admin_socket}")


def first_x509_svids(responses: Iterator[di_pb2.SubscribeToX509SVIDsResponse]) -> list[str]:
    """The SPIFFE IDs of the first response that carries SVIDs (checked against their keys)."""
    for resp in responses:
        ids = []
        for svid in resp.x509_svids:
            leaf = x509.load_der_x509_certificate(svid.x509_svid.cert_chain[0])
            assert str(spiffe_id_from_certificate(leaf)) == (
                f"spiffe://{svid.x509_svid.id.trust_domain}{svid.x509_svid.id.path}"
            )
            assert svid.x509_svid.expires_at == int(leaf.not_valid_after_utc.timestamp())
            assert svid.x509_svid_key  # PKCS#8 DER
            ids.append(str(spiffe_id_from_certificate(leaf)))
        if ids:
            return ids
    raise AssertionError("the stream ended without SVIDs")


def test_socket_is_not_open_to_everyone(env: Env) -> None:
    assert stat.S_IMODE(env.admin_socket.stat().st_mode) == 0o770


def test_delegate_gets_another_workloads_svid_by_selectors(env: Env) -> None:
    with channel(env) as ch:
        stub = di_grpc.DelegatedIdentityStub(ch)
        stream = stub.SubscribeToX509SVIDs(
            di_pb2.SubscribeToX509SVIDsRequest(selectors=[OTHER_SELECTOR]), timeout=60
        )
        try:
            # the admin entry needs unix:gid:4242 too, so these selectors do not match it
            assert first_x509_svids(stream) == [OTHER]
        finally:
            stream.cancel()
        jwt = stub.FetchJWTSVIDs(
            di_pb2.FetchJWTSVIDsRequest(audience=["svc"], selectors=[OTHER_SELECTOR]), timeout=60
        )
        assert [f"spiffe://{s.id.trust_domain}{s.id.path}" for s in jwt.svids] == [OTHER]
        bundles = stub.SubscribeToX509Bundles(di_pb2.SubscribeToX509BundlesRequest(), timeout=60)
        try:
            assert list(next(bundles).ca_certificates) == [f"spiffe://{TD}"]
        finally:
            bundles.cancel()


def test_admin_svids_are_withheld_from_delegates(env: Env) -> None:
    with channel(env) as ch:
        stream = di_grpc.DelegatedIdentityStub(ch).SubscribeToX509SVIDs(
            di_pb2.SubscribeToX509SVIDsRequest(
                selectors=[OTHER_SELECTOR, selector_pb2.Selector(type="unix", value="gid:4242")]
            ),
            timeout=60,
        )
        try:
            assert first_x509_svids(stream) == [OTHER]  # not ADMIN_OTHER, which also matches
        finally:
            stream.cancel()


def test_delegate_gets_svid_of_a_process_by_pid(env: Env) -> None:
    sleeper = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                                "--clear-groups", "sleep", "120"])  # fmt: skip
    try:
        # until setpriv has dropped to nobody and exec'd sleep, the PID is root's setpriv, and
        # the agent rightly attests it as root (a delegate asking then gets the root entry)
        poll("the sleeper runs as nobody", lambda: _runs_as(sleeper.pid, "sleep", NOBODY))
        with channel(env) as ch:
            stub = di_grpc.DelegatedIdentityStub(ch)
            stream = stub.SubscribeToX509SVIDsByPID(
                di_pb2.SubscribeToX509SVIDsByPIDRequest(pid=sleeper.pid), timeout=60
            )
            try:
                assert first_x509_svids(stream) == [NOBODY_WORKLOAD]
            finally:
                stream.cancel()
            with pytest.raises(grpc.RpcError) as bad_pid:
                stub.FetchJWTSVIDsByPID(
                    di_pb2.FetchJWTSVIDsByPIDRequest(audience=["svc"], pid=-1), timeout=60
                )
            assert bad_pid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        sleeper.kill()
        sleeper.wait()


def _runs_as(pid: int, comm: str, uid: int) -> bool:
    """Whether process ``pid`` is running ``comm`` with real and effective uid ``uid``."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    uids = next(line.split()[1:3] for line in status.splitlines() if line.startswith("Uid:"))
    return name == comm and uids == [str(uid), str(uid)]


def _as_user(uid: int, socket_path: Path) -> dict[str, object]:
    # gid 0: the socket is 0770 root:root, so the group lets the caller reach the agent, and
    # only the agent's own check is left to refuse it.
    out = subprocess.run(
        ["setpriv", f"--reuid={uid}", "--regid=0", "--clear-groups", sys.executable,
         str(ADMIN_CALLER), str(socket_path)],
        capture_output=True, text=True, timeout=90, check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])},
    )  # fmt: skip
    lines = out.stdout.strip().splitlines()
    assert lines, f"admin_caller printed nothing: {out.stderr}"
    result: dict[str, object] = json.loads(lines[-1])
    return result


def test_non_delegates_are_refused(env: Env) -> None:
    with_entry = _as_user(
        NOBODY, env.admin_socket
    )  # has an entry, /nobody, which is not a delegate
    assert with_entry == {
        "status": "PERMISSION_DENIED",
        "message": "caller not configured as an authorized delegate",
        "ids": [],
    }
    without_entry = _as_user(4343, env.admin_socket)
    assert without_entry["status"] == "PERMISSION_DENIED"
    assert without_entry["message"] == "no identity issued"


def test_debug_getinfo(env: Env) -> None:
    with channel(env) as ch:
        info = debug_pb2_grpc.DebugStub(ch).GetInfo(debug_pb2.GetInfoRequest(), timeout=30)
    chain = info.svid_chain
    assert chain[0].id.trust_domain == TD
    assert chain[0].id.path.startswith("/spire/agent/join_token/")  # the agent's own SVID
    # ... up to the bundle's root CA (whose URI is the trust domain's own ID)
    assert len(chain) >= 2 and chain[-1].id.path == ""
    assert info.last_sync_success > 0
    assert info.cached_x509_svids_count >= 1 and info.svids_count == info.cached_x509_svids_count
    assert info.uptime >= 0


def test_logger_set_and_reset_change_what_the_agent_logs(env: Env) -> None:
    refused = "admin API call refused"

    def refused_call(stub: di_grpc.DelegatedIdentityStub) -> str:
        """A call refused with INVALID_ARGUMENT (logged at INFO); the log it added."""
        log_path = env.agent.base / "agent.log"
        before = log_path.stat().st_size
        with pytest.raises(grpc.RpcError):
            stub.FetchJWTSVIDs(di_pb2.FetchJWTSVIDsRequest(audience=[]), timeout=30)
        with log_path.open("rb") as log:
            log.seek(before)
            return log.read().decode(errors="replace")

    with channel(env) as ch:
        logger = logger_pb2_grpc.LoggerStub(ch)
        delegated = di_grpc.DelegatedIdentityStub(ch)
        got = logger.GetLogger(logger_pb2.GetLoggerRequest(), timeout=30)
        assert (got.current_level, got.launch_level) == (types_logger.INFO, types_logger.INFO)
        assert refused in refused_call(delegated)

        raised = logger.SetLogLevel(
            logger_pb2.SetLogLevelRequest(new_level=types_logger.ERROR), timeout=30
        )
        assert (raised.current_level, raised.launch_level) == (
            types_logger.ERROR,
            types_logger.INFO,
        )
        assert refused not in refused_call(delegated)

        reset = logger.ResetLogLevel(logger_pb2.ResetLogLevelRequest(), timeout=30)
        assert reset.current_level == types_logger.INFO
        assert refused in refused_call(delegated)


_EXEC_LOOP = """
import ctypes, sys
print("ready", flush=True)
for line in sys.stdin:
    exec(line)
    print("done", flush=True)
"""


def test_stream_by_pid_ends_when_the_process_changes(env: Env) -> None:
    """The process a delegate named by PID turns non-dumpable (what a setuid exec leaves):
    the next update is not sent; the stream ends PermissionDenied."""
    workload = subprocess.Popen(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         sys.executable, "-c", _EXEC_LOOP],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert workload.stdin is not None and workload.stdout is not None
    try:
        assert workload.stdout.readline().strip() == "ready"
        with channel(env) as ch:
            stream = di_grpc.DelegatedIdentityStub(ch).SubscribeToX509SVIDsByPID(
                di_pb2.SubscribeToX509SVIDsByPIDRequest(pid=workload.pid), timeout=60
            )
            try:
                assert first_x509_svids(stream) == [NOBODY_WORKLOAD]
                workload.stdin.write("ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)\n")
                workload.stdin.flush()
                assert workload.stdout.readline().strip() == "done"
                # A change for that workload: a second entry its selectors match.
                env.server.create_entry(NODE, f"{NOBODY_WORKLOAD}-2", f"unix:uid:{NOBODY}")
                with pytest.raises(grpc.RpcError) as ended:
                    next(stream)
                assert ended.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert "no longer dumpable" in (ended.value.details() or "")
            finally:
                stream.cancel()
    finally:
        workload.kill()
        workload.wait()
