"""aws_iid end to end: a real ``plastron-server run`` process verifying with test keys registered
for a fake region (extra_certificates) and looking the instance up in a fake EC2/IAM API, and a
real ``plastron-agent run`` reading a fake IMDSv2. The workload gets its SVID through a node
alias keyed on an EC2 tag selector; a second agent for the same instance is refused (trust on
first use), and so is an agent whose metadata service serves a tampered document; the node
table holds the one node."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.aws_fake_services import FakeAwsApi, FakeImds, FakeInstance
from tests.aws_fakes import ACCOUNT, REGION, FakeSigner, make_document
from tests.conformance.nodeattestor_env import AttestEnv, process_env

BIN = Path(sys.executable).parent
DEADLINE = 60.0
TD = "example.org"
INSTANCE = "i-0b22a22eec53b9321"
AGENT_ID = f"spiffe://{TD}/spire/agent/aws_iid/{ACCOUNT}/{REGION}/{INSTANCE}"
NODE_ALIAS = f"spiffe://{TD}/node/aws-web"
WORKLOAD = f"spiffe://{TD}/workload/aws-web"
KEY_ID = "AKIAFAKESTATIC000002"


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pl-aws-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def server_plugins(base: Path, api_url: str, signer: FakeSigner) -> str:
    kinds = []
    for kind in ("rsa2048", "rsa"):
        (base / f"{kind}.pem").write_bytes(signer.pem(kind))
        kinds.append(f'{kind} {{ "{REGION}" = "{base}/{kind}.pem" }}')
    return f"""
  NodeAttestor "aws_iid" {{ plugin_data {{
    access_key_id = "{KEY_ID}"
    secret_access_key = "fake-secret"
    ec2_endpoint = "{api_url}"
    iam_endpoint = "{api_url}"
    account_allow_list = ["{ACCOUNT}"]
    extra_certificates {{ {" ".join(kinds)} }}
  }} }}
"""


def agent_config(base: Path, env: AttestEnv, imds_url: str, name: str) -> Path:
    path = base / f"{name}.conf"
    path.write_text(f"""
agent {{
  trust_domain = "{TD}"
  server_address = "127.0.0.1"
  server_port = {env.port}
  data_dir = "{base}/{name}-data"
  socket_path = "{base}/{name}.sock"
  trust_bundle_path = "{base}/bootstrap.pem"
  log_level = "DEBUG"
  experimental {{ sync_interval = "1s" }}
}}
plugins {{
  NodeAttestor "aws_iid" {{ plugin_data {{ ec2_metadata_endpoint = "{imds_url}/latest" }} }}
  KeyManager "memory" {{ plugin_data {{}} }}
  WorkloadAttestor "unix" {{ plugin_data {{}} }}
}}
""")
    return path


def cli(env: AttestEnv, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(BIN / "plastron-server"), *args, "-socketPath", env.socket_path]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def start_agent(base: Path, config: Path, name: str) -> subprocess.Popen[bytes]:
    with (base / f"{name}.log").open("ab") as log:
        return subprocess.Popen(
            [str(BIN / "plastron-agent"), "run", "-config", str(config)], stdout=log, stderr=log
        )


def stop(agent: subprocess.Popen[bytes]) -> None:
    if agent.poll() is None:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=20)


def wait_for_workload_svid(base: Path, agent: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        if agent.poll() is not None:
            log = (base / "first.log").read_text(errors="replace")
            raise AssertionError(f"agent exited {agent.returncode}:\n{log[-4000:]}")
        out = subprocess.run(
            [str(BIN / "plastron-agent"), "api", "fetch", "x509", "-socketPath",
             str(base / "first.sock")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if out.returncode == 0 and WORKLOAD in out.stdout:
            return
        time.sleep(0.1)  # polling interval, not a readiness guess
    raise AssertionError(f"no workload SVID within {DEADLINE}s")


def wait_for_exit(agent: subprocess.Popen[bytes], log: Path) -> str:
    try:
        agent.wait(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        stop(agent)
        raise AssertionError(f"agent kept running:\n{log.read_text()[-3000:]}") from None
    assert agent.returncode != 0
    return log.read_text(errors="replace")


def node_ids(env: AttestEnv) -> list[str]:
    return [str(row[1]) for row in env.node_rows()["attested_node_entries"]]


def test_agent_attests_with_aws_iid_and_a_second_one_is_refused(base: Path) -> None:
    signer = FakeSigner()
    api = FakeAwsApi()
    api.add(FakeInstance(INSTANCE, tags={"role": "web"}, profile="web", roles=["web-role"]))
    imds = FakeImds(signer=signer, document=make_document(instance_id=INSTANCE))
    with (
        api.run() as api_url,
        imds.run() as imds_url,
        process_env(server_plugins(base, api_url, signer)) as env,
    ):
        for parent, sid, selector in (
            (f"spiffe://{TD}/spire/server", NODE_ALIAS, "aws_iid:tag:role:web"),
            (NODE_ALIAS, WORKLOAD, f"unix:uid:{os.geteuid()}"),
        ):
            made = cli(env, "entry", "create", "-parentID", parent, "-spiffeID", sid,
                       "-selector", selector)  # fmt: skip
            assert made.returncode == 0, made.stderr
        (base / "bootstrap.pem").write_text(cli(env, "bundle", "show").stdout)

        first = start_agent(base, agent_config(base, env, imds_url, "first"), "first")
        try:
            wait_for_workload_svid(base, first)
        finally:
            stop(first)
        assert any(AGENT_ID in row for row in node_ids(env)), node_ids(env)
        assert ("DescribeInstances", KEY_ID) in api.calls
        assert all(ok for _, _, ok in imds.requests)  # IMDSv2 only
        listed = cli(env, "agent", "show", "-spiffeID", AGENT_ID).stdout
        assert "aws_iid:iamrole:arn:aws:iam::123456789012:role/web-role" in listed, listed
        before = env.node_rows()

        # the same instance again (another process on it, or a copied document): refused
        second = start_agent(base, agent_config(base, env, imds_url, "second"), "second")
        log = wait_for_exit(second, base / "second.log")
        assert "has already attested" in log and "evict" in log, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
        assert env.node_rows() == before

        # a metadata service serving a tampered document: refused, nothing written
        imds.document = imds.document.replace(b"t3.micro", b"t3.large")
        third = start_agent(base, agent_config(base, env, imds_url, "third"), "third")
        log = wait_for_exit(third, base / "third.log")
        assert "signed content is not the presented document" in log, log[-3000:]
        assert env.node_rows() == before
        server_log = (env.log_path or Path("/dev/null")).read_text(errors="replace")
        assert "Traceback" not in server_log


def test_agent_says_one_line_when_imds_is_unreachable(base: Path) -> None:
    with process_env("") as env:
        (base / "bootstrap.pem").write_text(cli(env, "bundle", "show").stdout)
        config = agent_config(base, env, "http://127.0.0.1:9", "lonely")
        agent = start_agent(base, config, "lonely")
        log = wait_for_exit(agent, base / "lonely.log")
    assert "aws_iid: the EC2 metadata service at http://127.0.0.1:9 is unreachable" in log, log
    assert "Traceback" not in log, log[-3000:]
