"""RFC 7512 URI and plugin_data parsing for the pkcs11 KeyManager (no token needed)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plastron.errors import ConfigError, KeyManagerError
from plastron.hsm.config import parse_pkcs11_config
from plastron.hsm.uri import parse_pkcs11_uri

MOD = "/usr/lib/softhsm/libsofthsm2.so"


def test_uri_full() -> None:
    uri = parse_pkcs11_uri(
        "pkcs11:token=ca%20token;object=plastron%2F;type=private"
        f"?module-path={MOD}&pin-source=file:/etc/plastron/hsm.pin"
    )
    assert uri.token_label == "ca token"
    assert uri.object_label == "plastron/"
    assert uri.module_path == MOD
    assert uri.pin_file == "/etc/plastron/hsm.pin"
    assert uri.pin_env is None


def test_uri_selectors_and_pin_env() -> None:
    assert parse_pkcs11_uri("pkcs11:slot-id=7").slot_id == 7
    assert parse_pkcs11_uri("pkcs11:serial=a1b2").token_serial == "a1b2"
    assert parse_pkcs11_uri("pkcs11:token=t?pin-source=env:HSM_PIN").pin_env == "HSM_PIN"
    assert parse_pkcs11_uri("pkcs11:token=t?pin-source=file:///p").pin_file == "/p"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("pkcs:token=t", "must start with 'pkcs11:'"),
        ("pkcs11:token=t?pin-value=1234", "pin-value is not accepted"),
        ("pkcs11:token=t;color=red", "unknown path attribute 'color'"),
        ("pkcs11:token=t?module-name=softhsm2", "unknown query attribute 'module-name'"),
        ("pkcs11:token=t;token=u", "appears twice"),
        ("pkcs11:token=%zz", "malformed percent-escape"),
        ("pkcs11:token=%ff", "not valid UTF-8"),
        ("pkcs11:slot-id=-1", "not a decimal number"),
        ("pkcs11:type=cert", "type='cert' is not supported"),
        ("pkcs11:token", "not name=value"),
        ("pkcs11:token=t?pin-source=relative.pin", "must be file:<path> or env:<NAME>"),
        ("pkcs11:token=t?pin-source=env:1BAD", "invalid variable"),
        ("pkcs11:token=t#frag", "fragment"),
        ("pkcs11:token=" + "a" * 5000, "longer than"),
    ],
)
def test_uri_rejects(uri: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_pkcs11_uri(uri)


@given(st.text(max_size=200))
def test_uri_parser_only_raises_config_error(text: str) -> None:
    for candidate in (text, "pkcs11:" + text):
        with contextlib.suppress(ConfigError):
            parse_pkcs11_uri(candidate)


@given(st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s))
def test_uri_percent_roundtrip(label: str) -> None:
    encoded = "".join(f"%{b:02x}" for b in label.encode())
    assert parse_pkcs11_uri(f"pkcs11:token={encoded}").token_label == label


def test_config_from_keys_and_from_uri_agree() -> None:
    keys = parse_pkcs11_config(
        {"module_path": MOD, "token_label": "ca", "pin_file": "/p", "key_label_prefix": "x/"}
    )
    uri = parse_pkcs11_config(
        {"uri": f"pkcs11:token=ca;object=x%2F?module-path={MOD}&pin-source=/p"}
    )
    assert keys == uri


B = {"module_path": MOD, "token_label": "a", "pin_env": "P"}


def _without(*keys: str, **extra: object) -> dict[str, object]:
    data: dict[str, object] = {k: v for k, v in B.items() if k not in keys}
    data.update(extra)
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_without("module_path"), "module_path is required"),
        (_without(module_path="lib.so"), "absolute path"),
        (_without("token_label"), "exactly one of token_label, slot_id"),
        (_without(slot_id=1), "got token_label, slot_id"),
        (_without("pin_env"), "exactly one of pin_env, pin_file"),
        (_without(pin_file="/p"), "got pin_env, pin_file"),
        (_without("pin_env", pin_file="rel"), "must be an absolute path"),
        (_without(user_pin="1"), 'unknown key "pkcs11.plugin_data.user_pin"'),
        ({"uri": "pkcs11:token=a", "module_path": MOD}, "cannot be combined with 'module_path'"),
        (_without("token_label", slot_id=True), "slot_id"),
        (_without(key_label_prefix="a b"), "key_label_prefix"),
        (_without(token_label=5), "pkcs11.plugin_data.token_label must be a string"),
        (_without(token_label=""), "pkcs11.plugin_data.token_label must be a non-empty string"),
    ],
)
def test_config_rejects(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_pkcs11_config(data)


def test_slot_id_accepts_digit_string() -> None:
    assert parse_pkcs11_config({"module_path": MOD, "slot_id": "12", "pin_env": "P"}).slot_id == 12


def test_pin_file_rules(tmp_path: Path) -> None:
    pin = tmp_path / "pin"
    pin.write_bytes(b"123456\n")
    pin.chmod(0o600)
    cfg = parse_pkcs11_config({"module_path": MOD, "token_label": "a", "pin_file": str(pin)})
    assert cfg.read_pin() == b"123456"
    assert "123456" not in repr(cfg)
    pin.chmod(0o604)
    with pytest.raises(KeyManagerError, match="accessible to other users"):
        cfg.read_pin()
    pin.chmod(0o600)
    pin.write_bytes(b"x" * 300)
    with pytest.raises(KeyManagerError, match=r"must be 1\.\.256 bytes"):
        cfg.read_pin()
    pin.write_bytes(b"\n")
    with pytest.raises(KeyManagerError, match=r"must be 1\.\.256 bytes"):
        cfg.read_pin()
    link = tmp_path / "link"
    os.symlink(pin, link)
    cfg = parse_pkcs11_config({"module_path": MOD, "token_label": "a", "pin_file": str(link)})
    with pytest.raises(KeyManagerError, match="cannot read pin_file"):
        cfg.read_pin()
    missing = parse_pkcs11_config({"module_path": MOD, "token_label": "a", "pin_file": "/nope"})
    with pytest.raises(KeyManagerError, match="cannot read pin_file '/nope'"):
        missing.read_pin()
