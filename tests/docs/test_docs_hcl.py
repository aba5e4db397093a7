"""Every HCL block of README.md and docs/ passes the validation its program runs at start:
full configs as written, fragments inside the smallest config around them.

``plastron-server validate`` and ``plastron-agent validate`` run in this process (their
``main``), which keeps some forty validations to a second. The page's absolute paths
(/etc/plastron, /var/lib/plastron..., /run/plastron..., /tmp/plastron...) move under a
temporary directory, where each file the block names is made: a certificate or key from one
self-signed CA, a PIN, an empty directory of CAs. Which wrapping a block gets is in its marker:
the test it names.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from plastron.agent.cli.main import main as agent_main
from plastron.oidc.config import load_oidc_config
from plastron.server.cli.main import main as server_main
from tests.docs.doc_blocks import Block, blocks_tested_by
from tests.docs.hcl_fixtures import (
    IN_A_POD,
    agent_config_around,
    make_named_files,
    move_paths_under,
    server_config_around,
)


def _blocks(test_name: str) -> pytest.MarkDecorator:
    blocks = blocks_tested_by(__file__, test_name)
    return pytest.mark.parametrize("block", blocks, ids=[b.where for b in blocks])


def _config_file(root: Path, text: str) -> Path:
    moved = move_paths_under(root, text)
    make_named_files(root, moved)
    path = root / "block.conf"
    path.write_text(moved)
    return path


def _server_validates(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = server_main(["validate", "-config", str(path)])
    out, err = capsys.readouterr()
    assert status == 0 and "Configuration is valid." in out, err + path.read_text()
    assert "Warning" not in err, err


def _agent_validates(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = agent_main(["validate", "-config", str(path)])
    out, err = capsys.readouterr()
    assert status == 0 and "Agent configuration file is valid." in out, err + path.read_text()


@_blocks("test_server_config")
def test_server_config(block: Block, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _server_validates(_config_file(tmp_path, block.text), capsys)


@_blocks("test_server_fragment")
def test_server_fragment(block: Block, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _server_validates(_config_file(tmp_path, server_config_around(block.text)), capsys)


@_blocks("test_agent_config")
def test_agent_config(block: Block, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _agent_validates(_config_file(tmp_path, block.text), capsys)


@_blocks("test_agent_fragment")
def test_agent_fragment(block: Block, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _agent_validates(_config_file(tmp_path, agent_config_around(block.text)), capsys)


@_blocks("test_oidc_config")
def test_oidc_config(block: Block, tmp_path: Path) -> None:
    config = load_oidc_config(_config_file(tmp_path, block.text))
    assert config.domains, re.sub(r"\s+", " ", block.text)


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare"
)


def _agent_validates_on_a_host(path: Path, host: str) -> None:
    """``validate`` in a mount namespace whose fresh /run has what ``host`` (shell) puts there."""
    validate = f'exec "$0" -m plastron.agent.cli.main validate -config {path}'
    script = f"mount -t tmpfs tmpfs /run && {host} && {validate}"
    done = subprocess.run(
        ["unshare", "--mount", "bash", "-euo", "pipefail", "-c", script, sys.executable],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Agent configuration file is valid." in done.stdout


@needs_root
@_blocks("test_agent_fragment_on_a_systemd_host")
def test_agent_fragment_on_a_systemd_host(block: Block, tmp_path: Path) -> None:
    """The systemd attestor refuses a host without systemd, as this CI container is: validated
    in a mount namespace whose /run has what a systemd host's has (/run/systemd/system)."""
    path = _config_file(tmp_path, agent_config_around(block.text))
    _agent_validates_on_a_host(path, "mkdir -p /run/systemd/system")


@needs_root
@_blocks("test_agent_fragment_in_a_pod")
def test_agent_fragment_in_a_pod(block: Block, tmp_path: Path) -> None:
    """The k8s attestor reads the kubelet CA and the service account token when it is built,
    and so does validate: validated in a mount namespace whose /run has a pod's service
    account."""
    path = _config_file(tmp_path, agent_config_around(block.text))
    _agent_validates_on_a_host(path, IN_A_POD)
