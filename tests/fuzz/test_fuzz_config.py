"""Bad input at the configuration reader (HCL and JSON, with and without ``-expandEnv``): a
clean ConfigError naming the problem, or a configuration. Seeds are the SPIRE-shaped example
configurations of the config tests; inputs are random text, those files with random edits, and
HCL documents built from the real keys with values of every type."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from plastron.agent.config import parse_agent_config
from plastron.server.config import parse_server_config
from tests.fuzz.fuzzing import check, fuzz_settings, json_values, mutated

DATA = Path(__file__).resolve().parents[1] / "unit" / "config" / "data"
SERVER_SEED = (DATA / "server.conf").read_bytes()
AGENT_SEED = (DATA / "agent.conf").read_bytes()
SERVER_KEYS = ["trust_domain", "bind_port", "data_dir", "ca_ttl", "admin_ids", "log_level",
               "ca_key_type", "default_x509_svid_ttl", "socket_path", "federation"]  # fmt: skip
AGENT_KEYS = ["trust_domain", "server_address", "server_port", "data_dir", "join_token",
              "trust_bundle_path", "insecure_bootstrap", "socket_path", "experimental"]  # fmt: skip


def _hcl_value(value: Any) -> str:
    if isinstance(value, dict):
        return (
            "{ " + " ".join(f"{json.dumps(k)} = {_hcl_value(v)}" for k, v in value.items()) + " }"
        )
    return json.dumps(value)


def hcl_documents(section: str, keys: list[str]) -> Any:
    body = st.dictionaries(st.sampled_from(keys) | st.text(max_size=8), json_values, max_size=6)
    plugin = st.builds(
        lambda kind, name, data: f'{kind} "{name}" {{ plugin_data {_hcl_value(data)} }}',
        st.sampled_from(["DataStore", "KeyManager", "NodeAttestor", "WorkloadAttestor", "X"]),
        st.sampled_from(["sql", "memory", "disk", "join_token", "x509pop", "tpm", "unix", ""]),
        st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    )
    return st.builds(
        lambda items, plugins: (
            f"{section} {{\n"
            + "\n".join(f"  {k} = {_hcl_value(v)}" for k, v in items.items())
            + "\n}\nplugins {\n  "
            + "\n  ".join(plugins)
            + "\n}\n"
        ),
        body,
        st.lists(plugin, max_size=3),
    )


def texts(seed: bytes, section: str, keys: list[str]) -> Any:
    return (
        hcl_documents(section, keys)
        | mutated([seed]).map(lambda b: b.decode("utf-8", "replace"))
        | st.text(max_size=300)
        | st.builds(lambda d: json.dumps({section: d}), json_values)
    )


environ = st.dictionaries(st.text(min_size=1, max_size=6), st.text(max_size=40), max_size=3)


@fuzz_settings(150)
@given(text=texts(SERVER_SEED, "server", SERVER_KEYS), expand=st.booleans(), env=environ)
def test_server_config(text: str, expand: bool, env: dict[str, str]) -> None:
    check("HCL config (server)", parse_server_config, text, expand_env=expand, environ=env)


@fuzz_settings(150)
@given(text=texts(AGENT_SEED, "agent", AGENT_KEYS), expand=st.booleans(), env=environ)
def test_agent_config(text: str, expand: bool, env: dict[str, str]) -> None:
    check("HCL config (agent)", parse_agent_config, text, expand_env=expand, environ=env)
