"""-expandEnv semantics and secret references in plugin_data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plastron.configs.env_expansion import expand_env
from plastron.configs.secret import resolve_secret
from plastron.errors import ConfigError
from plastron.server.config import parse_server_config

ENV = {"TD": "example.org", "DIR": "/var/lib/plastron", "A_1": "x"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$TD", "example.org"),
        ("${TD}", "example.org"),
        ("td=$TD/x", "td=example.org/x"),
        ("${DIR}/data", "/var/lib/plastron/data"),
        ("$UNSET", ""),
        ("${UNSET}!", "!"),
        ("$A_1$A_1", "xx"),
        ("cost $", "cost $"),  # trailing $ stays
        ("a $ b", "a $ b"),  # $ not followed by a name stays
        ("${}x", "x"),  # invalid syntax: eaten, as Go does
        ("${TD", "TD"),  # unterminated: Go eats the "{"
        ("$1", ""),  # special one-character names
        ("no dollars", "no dollars"),
    ],
)
def test_expand_env_matches_go(text: str, expected: str) -> None:
    assert expand_env(text, ENV) == expected


@given(st.text(alphabet="ab${}_1 ", max_size=40))
def test_expand_env_never_fails(text: str) -> None:
    assert isinstance(expand_env(text, ENV), str)


CONF = """
server {
    trust_domain = "$TD"
    data_dir = "${DIR}/data"
}
plugins { NodeAttestor "join_token" { plugin_data {} } }
"""


def test_server_config_with_expand_env() -> None:
    config = parse_server_config(CONF, expand_env=True, environ=ENV)
    assert config.trust_domain.name == "example.org"
    assert str(config.data_dir) == "/var/lib/plastron/data"


def test_without_expand_env_dollar_text_is_not_expanded() -> None:
    with pytest.raises(
        ConfigError, match=re.escape("server.trust_domain is not a valid trust domain")
    ):
        parse_server_config(CONF, expand_env=False)


def test_unset_variable_expands_to_empty_and_fails_validation() -> None:
    with pytest.raises(ConfigError, match=re.escape("server.trust_domain")):
        parse_server_config(CONF, expand_env=True, environ={"DIR": "/d"})


def test_secret_from_env() -> None:
    data = {"pin_env": "HSM_PIN"}
    assert resolve_secret(data, "pin", environ={"HSM_PIN": "1234"}) == "1234"


def test_secret_from_env_unset_is_refused_without_leaking() -> None:
    with pytest.raises(ConfigError, match="'HSM_PIN' is not set"):
        resolve_secret({"pin_env": "HSM_PIN"}, "pin", environ={})


def test_secret_from_file(tmp_path: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text("s3cret\n")
    assert resolve_secret({"pin_file": str(pin_file)}, "pin") == "s3cret"


def test_secret_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        resolve_secret({"pin_file": str(tmp_path / "missing")}, "pin")
    with pytest.raises(ConfigError, match="not a regular file"):
        resolve_secret({"pin_file": str(tmp_path)}, "pin")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        resolve_secret({"pin_file": str(empty)}, "pin")
    big = tmp_path / "big"
    big.write_bytes(b"x" * (64 * 1024 + 1))
    with pytest.raises(ConfigError, match="larger than"):
        resolve_secret({"pin_file": str(big)}, "pin")


def test_inline_secret_is_refused_unless_allowed() -> None:
    with pytest.raises(ConfigError, match="inline secret is refused") as info:
        resolve_secret({"pin": "1234"}, "pin", where="plugins.KeyManager.pkcs11.plugin_data")
    assert "1234" not in str(info.value)
    assert "plugins.KeyManager.pkcs11.plugin_data.pin" in str(info.value)
    assert resolve_secret({"pin": "1234"}, "pin", allow_inline=True) == "1234"


def test_secret_missing_or_ambiguous() -> None:
    with pytest.raises(ConfigError, match="pin is required: set pin_env or pin_file"):
        resolve_secret({}, "pin")
    with pytest.raises(ConfigError, match="only one of"):
        resolve_secret({"pin_env": "A", "pin_file": "/x"}, "pin", environ={"A": "1"})
    with pytest.raises(ConfigError, match="non-empty string"):
        resolve_secret({"pin_env": 5}, "pin")
