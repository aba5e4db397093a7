"""Security properties of the pkcs11 KeyManager: keys stay in the token, secrets stay out of
errors and logs, bad configuration fails once and clearly at start."""

from __future__ import annotations

import copy
import logging
import pickle
import subprocess
from pathlib import Path

import pkcs11
import pytest
from cryptography.hazmat.primitives import serialization
from pkcs11 import Attribute, MechanismFlag, ObjectClass
from pkcs11 import KeyType as P11KeyType
from pkcs11.util.ec import encode_named_curve_parameters
from softhsm_token import SoftHsmToken

from plastron.errors import ConfigError, KeyManagerError
from plastron.hsm.keymanager import Pkcs11KeyManager, create_pkcs11_key_manager
from plastron.hsm.session import PKCS11_LOCK
from plastron.keymanager import KeyType
from plastron.spiffe.ids import TrustDomain

TD = TrustDomain("example.org")
pytestmark = pytest.mark.softhsm


def _tool(token: SoftHsmToken, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["pkcs11-tool", "--module", token.module_path, "--token-label", token.token_label,
         "--login", "--pin", token.pin, *args],
        capture_output=True, text=True, env=token.env(), check=False, timeout=60,
    )  # fmt: skip


def test_key_attributes_in_token(softhsm_token: SoftHsmToken, manager: Pkcs11KeyManager) -> None:
    manager.generate_key("x509-CA-A", KeyType.EC_P256)
    label = manager.label_for("x509-CA-A")
    assert label == "plastron/example.org/s1/x509-CA-A"
    lib = pkcs11.lib(softhsm_token.module_path)
    with PKCS11_LOCK:
        session = lib.get_token(token_label=softhsm_token.token_label).open()  # inherits login
        try:
            key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
            for attr in (Attribute.SENSITIVE, Attribute.ALWAYS_SENSITIVE,
                         Attribute.NEVER_EXTRACTABLE, Attribute.LOCAL, Attribute.TOKEN,
                         Attribute.PRIVATE, Attribute.SIGN):  # fmt: skip
                assert key[attr] is True, attr
            for attr in (Attribute.EXTRACTABLE, Attribute.DERIVE, Attribute.DECRYPT):
                assert key[attr] is False, attr
            assert len(key.id) == 16
            with pytest.raises(pkcs11.AttributeSensitive):
                key[Attribute.VALUE]
            with pytest.raises(pkcs11.PKCS11Error):
                key[Attribute.EXTRACTABLE] = True
        finally:
            session.close()


def test_pkcs11_tool_sees_non_extractable_key(
    softhsm_token: SoftHsmToken, manager: Pkcs11KeyManager
) -> None:
    manager.generate_key("x509-CA-A", KeyType.EC_P256)
    listing = _tool(softhsm_token, "--list-objects", "--type", "privkey")
    assert listing.returncode == 0, listing.stderr
    assert "plastron/example.org/s1/x509-CA-A" in listing.stdout
    for word in ("sensitive", "always sensitive", "never extractable", "local"):
        assert word in listing.stdout
    assert "extractable," not in listing.stdout.replace("never extractable", "")
    read = _tool(softhsm_token, "--read-object", "--type", "privkey",
                 "--label", "plastron/example.org/s1/x509-CA-A")  # fmt: skip
    # pkcs11-tool refuses (exit 0, message on stderr); the attribute test above is the proof
    assert read.stdout == ""
    assert "not" in read.stderr


def test_signer_cannot_export(manager: Pkcs11KeyManager) -> None:
    manager.generate_key("x509-CA-A", KeyType.EC_P256)
    key = manager.signer("x509-CA-A")
    with pytest.raises(KeyManagerError, match="held in the HSM and cannot be exported"):
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    with pytest.raises(KeyManagerError, match="cannot be exported"):
        key.private_numbers()
    with pytest.raises(KeyManagerError, match="cannot be exported"):
        pickle.dumps(key)
    assert copy.deepcopy(key) is key
    assert repr(key) == (
        "<HsmEllipticCurvePrivateKey label='plastron/example.org/s1/x509-CA-A' curve=secp256r1>"
    )


def test_extractable_key_under_our_label_is_refused(
    softhsm_token: SoftHsmToken, manager: Pkcs11KeyManager
) -> None:
    """A key someone put in the token by hand, exportable, is never used as a CA key."""
    label = manager.label_for("x509-CA-A")
    lib = pkcs11.lib(softhsm_token.module_path)
    with PKCS11_LOCK:
        session = lib.get_token(token_label=softhsm_token.token_label).open(rw=True)
        try:
            params = session.create_domain_parameters(
                P11KeyType.EC,
                {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
                local=True,
            )
            params.generate_keypair(
                store=True, label=label, id=b"\x01" * 16,
                capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                private_template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
            )  # fmt: skip
        finally:
            session.close()
    with pytest.raises(KeyManagerError, match=r"refused: .*ALWAYS_SENSITIVE=False"):
        manager.signer("x509-CA-A")
    with pytest.raises(KeyManagerError, match="refused"):
        manager.get_public_keys()


def test_duplicate_label_is_refused(softhsm_token: SoftHsmToken, manager: Pkcs11KeyManager) -> None:
    manager.generate_key("x509-CA-A", KeyType.EC_P256)
    label = manager.label_for("x509-CA-A")
    # a second key pair with the same label, made by another tool
    made = _tool(softhsm_token, "--keypairgen", "--key-type", "EC:prime256v1",
                 "--label", label, "--id", "0a10", "--usage-sign")  # fmt: skip
    assert made.returncode == 0, made.stderr
    # the manager's cached handle is from before; a fresh manager looks the label up again
    fresh = create_pkcs11_key_manager(softhsm_token.plugin_data(), trust_domain=TD, server_id="s1")
    try:
        with pytest.raises(KeyManagerError, match="2 private keys carry label"):
            fresh.get_public_key("x509-CA-A")
    finally:
        fresh.close()


def test_wrong_pin_is_one_clear_error(softhsm_token: SoftHsmToken, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pin"
    bad.write_text("000000-not-the-pin")
    bad.chmod(0o600)
    data = softhsm_token.plugin_data(pin_file=str(bad))
    with pytest.raises(ConfigError, match="wrong PIN") as err:
        create_pkcs11_key_manager(data, trust_domain=TD, server_id="s1")
    assert "000000-not-the-pin" not in str(err.value)
    assert str(bad) in str(err.value)


def test_world_readable_pin_file_refused(softhsm_token: SoftHsmToken) -> None:
    softhsm_token.pin_file.chmod(0o644)
    try:
        with pytest.raises(ConfigError, match="accessible to other users"):
            create_pkcs11_key_manager(softhsm_token.plugin_data(), trust_domain=TD, server_id="s1")
    finally:
        softhsm_token.pin_file.chmod(0o600)


def test_pin_from_env(softhsm_token: SoftHsmToken, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_HSM_PIN", softhsm_token.pin)
    data = {"module_path": softhsm_token.module_path, "token_label": softhsm_token.token_label,
            "pin_env": "TEST_HSM_PIN"}  # fmt: skip
    km = create_pkcs11_key_manager(data, trust_domain=TD, server_id="s1")
    km.generate_key("JWT-Signer-A", KeyType.EC_P256)
    km.close()
    monkeypatch.delenv("TEST_HSM_PIN")
    with pytest.raises(ConfigError, match="'TEST_HSM_PIN' is not set"):
        create_pkcs11_key_manager(data, trust_domain=TD, server_id="s1")


def test_missing_token_is_one_clear_error(softhsm_token: SoftHsmToken) -> None:
    data = softhsm_token.plugin_data(token_label="no-such-token")
    with pytest.raises(ConfigError, match="no token with token_label='no-such-token'"):
        create_pkcs11_key_manager(data, trust_domain=TD, server_id="s1")


def test_missing_module_is_one_clear_error(softhsm_token: SoftHsmToken, tmp_path: Path) -> None:
    data = softhsm_token.plugin_data(module_path="/nonexistent/libpkcs11.so")
    with pytest.raises(ConfigError, match="does not exist"):
        create_pkcs11_key_manager(data, trust_domain=TD, server_id="s1")
    not_a_module = tmp_path / "lib.so"
    not_a_module.write_bytes(b"\x7fELF garbage")
    data = softhsm_token.plugin_data(module_path=str(not_a_module))
    with pytest.raises(ConfigError, match="is not a PKCS#11 module"):
        create_pkcs11_key_manager(data, trust_domain=TD, server_id="s1")


def test_no_secrets_in_logs_errors_or_data_dir(
    softhsm_token: SoftHsmToken, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    km = create_pkcs11_key_manager(softhsm_token.plugin_data(), trust_domain=TD, server_id="s1")
    messages: list[str] = [repr(km), repr(km.config)]
    try:
        km.generate_key("x509-CA-A", KeyType.EC_P384)
        key = km.signer("x509-CA-A")
        messages.append(repr(key))
        for call in (key.private_numbers, lambda: km.get_public_key("nope"),
                     lambda: km.generate_key("bad/id", KeyType.EC_P256)):  # fmt: skip
            with pytest.raises(Exception) as err:
                call()
            messages.append(str(err.value))
    finally:
        km.close()
    text = "\n".join(messages) + caplog.text
    assert softhsm_token.pin not in text
    assert "PRIVATE KEY" not in text
    assert list(data_dir.iterdir()) == []  # nothing written outside the token
