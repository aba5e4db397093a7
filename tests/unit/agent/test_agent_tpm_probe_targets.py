"""Which TPMs the agent probes: the ones its NodeAttestor (``tpm``, ``tpm_devid``) and KeyManager
(``tpm``) talk to, each once, read from their settings; none for an agent without a TPM (then
there is no ``tpm`` subsystem and no ``tpm`` series)."""

from __future__ import annotations

from pathlib import Path

import pytest

from plastron.agent.config import parse_agent_config
from plastron.agent.tpm_probe import agent_tctis
from plastron.tpm import openssl_provider
from plastron.tpm.tcti import Tcti


def _config(tmp_path: Path, plugins: str) -> str:
    return f"""
agent {{
  trust_domain = "example.org"
  server_address = "127.0.0.1"
  data_dir = "{tmp_path}/data"
  insecure_bootstrap = true
}}
plugins {{
  {plugins}
  WorkloadAttestor "unix" {{ plugin_data {{}} }}
}}
"""


def _tctis(tmp_path: Path, plugins: str) -> list[str]:
    return [str(t) for t in agent_tctis(parse_agent_config(_config(tmp_path, plugins)))]


DISK = 'KeyManager "disk" { plugin_data { directory = "/tmp/k" } }'
DEVID = """NodeAttestor "tpm_devid" { plugin_data {
    devid_cert_path = "devid.pem" devid_priv_path = "devid.priv" devid_pub_path = "devid.pub"
    tpm_device_path = "/dev/tpmrm1" } }"""


def _provider_available() -> bool:
    try:
        openssl_provider.check_available()
    except Exception:
        return False
    return True


def test_an_agent_without_a_tpm_probes_nothing(tmp_path: Path) -> None:
    plugins = f'NodeAttestor "join_token" {{ plugin_data {{}} }}\n{DISK}'
    assert _tctis(tmp_path, plugins) == []


def test_the_tpm_attestor_names_its_tcti_or_the_default(tmp_path: Path) -> None:
    given = 'NodeAttestor "tpm" { plugin_data { tcti = "swtpm:path=/run/t.sock" } }'
    assert _tctis(tmp_path, f"{given}\n{DISK}") == ["swtpm:path=/run/t.sock"]
    default = 'NodeAttestor "tpm" { plugin_data {} }'
    assert _tctis(tmp_path, f"{default}\n{DISK}") == ["device:/dev/tpmrm0"]


def test_the_devid_attestor_device_path_is_its_tcti(tmp_path: Path) -> None:
    assert _tctis(tmp_path, f"{DEVID}\n{DISK}") == ["device:/dev/tpmrm1"]


@pytest.mark.skipif(not _provider_available(), reason="tpm2-openssl is not installed")
def test_attestor_and_key_manager_on_one_tpm_probe_it_once(tmp_path: Path) -> None:
    rm = "tabrmd:bus_name=com.intel.tss2.Tabrmd,bus_type=system"
    attestor = f'NodeAttestor "tpm" {{ plugin_data {{ tcti = "{rm}" }} }}'
    same = f'KeyManager "tpm" {{ plugin_data {{ tcti = "{rm}" }} }}'
    assert _tctis(tmp_path, f"{attestor}\n{same}") == [rm]
    other = 'KeyManager "tpm" { plugin_data { tcti = "device:/dev/tpmrm0" } }'
    assert _tctis(tmp_path, f"{DEVID}\n{other}") == ["device:/dev/tpmrm1", "device:/dev/tpmrm0"]
    join = 'NodeAttestor "join_token" { plugin_data {} }'
    assert agent_tctis(parse_agent_config(_config(tmp_path, f"{join}\n{same}"))) == [Tcti.parse(rm)]
