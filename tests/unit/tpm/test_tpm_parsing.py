"""Hermetic checks of the TPM parsers, message codecs, TCTI strings and config (no TPM)."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import re
import struct
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st

from plastron.configs.block import Block
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import AttestationFailed, ConfigError, KeyManagerError
from plastron.plugins import PluginContext
from plastron.tpm import openssl_provider
from plastron.tpm import structures as s
from plastron.tpm.attestor import TpmAgentConfig, TpmServerConfig, load_ek_hashes, load_pcr_policy
from plastron.tpm.credential import kdfa
from plastron.tpm.messages import Challenge, Payload, Response
from plastron.tpm.tcti import Tcti
from plastron.tpm.verify import check_ak, check_ek_template
from tests.pki import self_signed


def ecc_public(attrs: int, *, curve: int = s.ECC_NIST_P256, policy: bytes = b"") -> bytes:
    body = struct.pack(">HHI", s.ALG_ECC, s.ALG_SHA256, attrs) + s.tpm2b(policy)
    body += struct.pack(">H", s.ALG_NULL)  # symmetric
    body += struct.pack(">HH", s.ALG_ECDSA, s.ALG_SHA256)  # scheme
    body += struct.pack(">HH", curve, s.ALG_NULL)  # curve, kdf
    # the P-256 generator point: a valid key
    gx = bytes.fromhex("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296")
    gy = bytes.fromhex("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5")
    return body + s.tpm2b(gx) + s.tpm2b(gy)


AK_ATTRS = (
    s.FIXED_TPM | s.FIXED_PARENT | s.SENSITIVE_DATA_ORIGIN | s.USER_WITH_AUTH | s.RESTRICTED
) | s.SIGN_ENCRYPT


def test_tcti_forms() -> None:
    assert Tcti.parse("device:/dev/tpmrm0") == Tcti("device", "/dev/tpmrm0")
    assert Tcti.parse("swtpm:path=/run/s.sock").conf == "path=/run/s.sock"
    assert Tcti.parse("swtpm:host=127.0.0.1,port=2321").name == "swtpm"
    assert Tcti.parse("tabrmd") == Tcti("tabrmd", "")
    assert str(Tcti.parse("tabrmd")) == "tabrmd"
    with_bus = "tabrmd:bus_name=com.intel.tss2.Tabrmd.x1,bus_type=session"
    assert str(Tcti.parse(with_bus)) == with_bus
    bad_values = [
        "tabrmd:bus_type=tcp",
        "tabrmd:bus_name=a/b",
        "tabrmd:other=1",
        "tabrmd:bus_type=session,bus_type=system",
        "",
        "mssim:port=1",
        "device:dev/tpm0",
        "swtpm:path=rel",
        "swtpm:port=99999",
        "swtpm:host=a;b",
        "swtpm:path=/a,host=b",
        "swtpm:port=1,port=2",
        "device:/x\n",
    ]
    for bad in bad_values:
        with pytest.raises(ConfigError, match="tcti"):
            Tcti.parse(bad)


def test_only_resource_managed_tctis_can_be_shared() -> None:
    """KeyManager ``tpm`` shares the TPM with tpm2-openssl: it needs a resource manager."""
    assert Tcti.parse("device:/dev/tpmrm0").resource_managed
    assert Tcti.parse("tabrmd").resource_managed
    assert not Tcti.parse("device:/dev/tpm0").resource_managed
    assert not Tcti.parse("swtpm:path=/run/s.sock").resource_managed


def test_tls_provider_refuses_a_tpm_without_resource_manager() -> None:
    # Refused before anything is loaded into this process's OpenSSL.
    with pytest.raises(KeyManagerError, match="serves one client at a time"):
        openssl_provider.ensure_loaded(Tcti.parse("swtpm:path=/run/s.sock"))
    openssl_provider.check_available()  # the Makefile installs tpm2-openssl


def test_public_area_parses_and_names() -> None:
    raw = ecc_public(AK_ATTRS)
    pub = s.parse_tpm2b_public(s.tpm2b(raw))
    assert pub.curve == s.ECC_NIST_P256 and pub.has(s.RESTRICTED)
    assert pub.name[:2] == b"\x00\x0b" and len(pub.name) == 34
    check_ak(pub)


def test_public_area_rejects_truncation_trailing_and_oversize() -> None:
    raw = ecc_public(AK_ATTRS)
    with pytest.raises(AttestationFailed, match="truncated"):
        s.parse_tpmt_public(raw[:-1])
    with pytest.raises(AttestationFailed, match="trailing"):
        s.parse_tpmt_public(raw + b"\x00")
    with pytest.raises(AttestationFailed, match="at most"):
        s.parse_tpmt_public(b"\x00" * 2000)
    with pytest.raises(AttestationFailed, match="authPolicy is 65 bytes"):
        s.parse_tpmt_public(struct.pack(">HHI", s.ALG_ECC, s.ALG_SHA256, 0) + s.tpm2b(b"x" * 65))


@given(st.binary(max_size=400))
def test_parsers_never_crash_on_garbage(data: bytes) -> None:
    for parse in (s.parse_tpm2b_public, s.parse_attest, s.parse_signature, s.parse_tpm2b_attest):
        with contextlib.suppress(AttestationFailed):
            parse(data)


def test_ak_attribute_rules() -> None:
    rules = [
        (s.RESTRICTED, "restricted"),
        (s.FIXED_TPM, "fixedTPM"),
        (s.SIGN_ENCRYPT, "sign"),
        (s.SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
    ]
    for missing, name in rules:
        pub = s.parse_tpmt_public(ecc_public(AK_ATTRS & ~missing))
        with pytest.raises(AttestationFailed, match=f"AK lacks required attributes {name}"):
            check_ak(pub)
    with pytest.raises(AttestationFailed, match="decrypt"):
        check_ak(s.parse_tpmt_public(ecc_public(AK_ATTRS | s.DECRYPT)))
    with pytest.raises(AttestationFailed, match="matches no TCG EK template"):
        check_ek_template(s.parse_tpmt_public(ecc_public(AK_ATTRS)))


def test_kdfa_matches_tpm2_pytss() -> None:
    from tpm2_pytss.constants import TPM2_ALG  # noqa: PLC0415
    from tpm2_pytss.internal.crypto import _kdfa  # type: ignore[attr-defined]  # noqa: PLC0415

    ours = kdfa(s.ALG_SHA256, b"k" * 32, b"STORAGE", b"name" + b"v", bits=128)
    theirs = _kdfa(TPM2_ALG.SHA256, b"k" * 32, b"STORAGE", b"name", b"v", 128)
    assert ours == theirs


def b64(n: int) -> str:
    return base64.b64encode(b"\x01" * n).decode()


def test_messages_roundtrip_and_bounds() -> None:
    p = Payload(ek_pub=b"e", ak_pub=b"a", ek_cert=b"c", ek_chain=(b"i",))
    assert Payload.parse(p.to_bytes()) == p
    c = Challenge(b"i", b"s", b"n" * 32, (0, 7))
    assert Challenge.parse(c.to_bytes()) == c
    r = Response(b"s" * 32, b"q", b"g", {0: b"\x00" * 32})
    assert Response.parse(r.to_bytes()) == r
    with pytest.raises(AttestationFailed, match="unknown keys 'extra'"):
        Payload.parse(json.dumps({"v": 1, "ek_pub": b64(1), "ak_pub": b64(1), "extra": 1}).encode())
    with pytest.raises(AttestationFailed, match="lacks ak_pub"):
        Payload.parse(json.dumps({"v": 1, "ek_pub": b64(1)}).encode())
    with pytest.raises(AttestationFailed, match="at most 2048 bytes"):
        Payload.parse(json.dumps({"v": 1, "ek_pub": b64(3000), "ak_pub": b64(1)}).encode())
    with pytest.raises(AttestationFailed, match="not valid base64"):
        Payload.parse(json.dumps({"v": 1, "ek_pub": "!!!!", "ak_pub": b64(1)}).encode())
    with pytest.raises(AttestationFailed, match="version 2"):
        Payload.parse(json.dumps({"v": 2, "ek_pub": b64(1), "ak_pub": b64(1)}).encode())
    bad_nonce = {
        "v": 1,
        "id_object": b64(1),
        "encrypted_secret": b64(1),
        "nonce": b64(16),
        "pcrs": [0],
    }
    with pytest.raises(AttestationFailed, match="nonce is 16 bytes; expected 32"):
        Challenge.parse(json.dumps(bad_nonce).encode())
    bad_pcr = {
        "v": 1,
        "secret": b64(32),
        "quote": b64(1),
        "quote_sig": b64(1),
        "pcrs": {"07": b64(32)},
    }
    with pytest.raises(AttestationFailed, match="not a PCR index"):
        Response.parse(json.dumps(bad_pcr).encode())


def _settings(name: str, data: dict[str, object]) -> Block:
    return PluginConfig("NodeAttestor", name, data).settings()


def test_server_and_agent_config(tmp_path: Path) -> None:
    ctx = PluginContext(base_dir=tmp_path)
    cfg = TpmServerConfig.from_settings(
        _settings("tpm", {"endorsement_ca_path": "ca.pem", "pcrs": [7, 0, 7]}), ctx
    )
    assert cfg.pcrs == (0, 7)
    assert cfg.endorsement_ca_path == str(tmp_path / "ca.pem")  # from the config's directory
    where = "plugins.NodeAttestor.tpm.plugin_data"
    with pytest.raises(ConfigError, match=re.escape(f'unknown key "{where}.ca_path"')):
        TpmServerConfig.from_settings(_settings("tpm", {"ca_path": "/x"}), ctx)
    with pytest.raises(ConfigError, match="not a PCR index"):
        TpmServerConfig.from_settings(_settings("tpm", {"pcrs": [24]}), ctx)
    assert TpmAgentConfig.from_settings(_settings("tpm", {})).tcti == "device:/dev/tpmrm0"
    with pytest.raises(ConfigError, match=re.escape(f"{where}.ek_type must be one of")):
        TpmAgentConfig.from_settings(_settings("tpm", {"ek_type": "dsa"}))
    hashes = tmp_path / "h"
    hashes.write_text("# c\n" + "AB" * 32 + "\n")
    assert load_ek_hashes(str(hashes)) == {"ab" * 32}
    hashes.write_text("nothex\n")
    with pytest.raises(ConfigError, match="line 1"):
        load_ek_hashes(str(hashes))
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps({"7": ["00" * 32]}))
    assert load_pcr_policy(str(policy)) == {7: frozenset({"00" * 32})}
    policy.write_text(json.dumps({"7": ["zz"]}))
    with pytest.raises(ConfigError, match="PCR 7 must list sha256 hex"):
        load_pcr_policy(str(policy))


def test_devid_agent_config() -> None:
    from plastron.tpm.devid import TpmDevidAgentConfig  # noqa: PLC0415

    base = {"devid_cert_path": "/c", "devid_priv_path": "/k", "devid_pub_path": "/p"}
    ctx = PluginContext()

    def config(data: dict[str, object]) -> TpmDevidAgentConfig:
        return TpmDevidAgentConfig.from_settings(_settings("tpm_devid", data), ctx)

    assert config({**base, "tpm_device_path": "/dev/tpmrm0"}).tcti == "device:/dev/tpmrm0"
    with pytest.raises(ConfigError, match=re.escape("plugin_data.devid_pub_path is required")):
        config({"devid_cert_path": "/c", "devid_priv_path": "/k"})
    with pytest.raises(ConfigError, match="not both"):
        config({**base, "tpm_device_path": "/d", "tcti": "device:/d"})


def _self_signed(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> x509.Certificate:
    return self_signed("server CA", key, backdate=dt.timedelta(0), serial=1).cert


def test_tls_provider_refuses_server_keys_a_tpm_cannot_verify() -> None:
    """With tpm2 preferred, the server's chain is verified in the TPM: refuse what it lacks."""
    fine = [
        _self_signed(ec.generate_private_key(ec.SECP256R1())),
        _self_signed(ec.generate_private_key(ec.SECP384R1())),
        _self_signed(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    ]
    openssl_provider.check_verifiable(fine)
    for key, kind in (
        (rsa.generate_private_key(public_exponent=65537, key_size=4096), "RSA-4096"),
        (ec.generate_private_key(ec.SECP521R1()), "secp521r1"),
    ):
        with pytest.raises(KeyManagerError, match=f"{kind} key .*ca_key_type"):
            openssl_provider.check_verifiable([*fine, _self_signed(key)])
