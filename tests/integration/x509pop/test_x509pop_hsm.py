"""x509pop with the node key in a SoftHSM2 token (``private_key_uri``): the key signs the
challenge inside the token and cannot be exported."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from softhsm_token import SoftHsmToken
from x509pop_pki import NOW, make_ca, make_leaf

from plastron.agent.plugin_loading import agent_plugins
from plastron.attestors.x509pop.agent import X509PopAgentAttestor
from plastron.attestors.x509pop.config import X509PopServerConfig
from plastron.attestors.x509pop.plugin import create_agent_attestor
from plastron.attestors.x509pop.server import X509PopServerAttestor
from plastron.clock import ManualClock
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import ConfigError, KeyManagerError
from plastron.hsm.config import parse_pkcs11_config
from plastron.hsm.keymanager import Pkcs11KeyManager
from plastron.hsm.session import open_token_session
from plastron.keymanager import KeyType
from plastron.spiffe.ids import SpiffeId, TrustDomain

pytestmark = pytest.mark.softhsm
TD = TrustDomain("example.org")
# pkcs11: key URIs are opened by the hsm room, registered as the agent does at start
CONTEXT = agent_plugins().context()
LABEL = "nodes/x509pop-node"


def node_key_in_token(token: SoftHsmToken, key_type: KeyType) -> Pkcs11KeyManager:
    """Generate the node key in the token under LABEL (as an operator would, once)."""
    session = open_token_session(parse_pkcs11_config(token.plugin_data()))
    km = Pkcs11KeyManager(session, trust_domain=TD, server_id="provision", label_scope="nodes/")
    km.generate_key("x509pop-node", key_type)
    return km


def uri_for(token: SoftHsmToken, label: str = LABEL) -> str:
    return (
        f"pkcs11:token={quote(token.token_label)};object={quote(label, safe='')}"
        f"?module-path={token.module_path}&pin-source=file:{token.pin_file}"
    )


def agent_plugin(cert_path: Path, uri: str) -> PluginConfig:
    return PluginConfig(
        type="NodeAttestor",
        name="x509pop",
        plugin_data={"certificate_path": str(cert_path), "private_key_uri": uri},
    )


@pytest.mark.parametrize("key_type", [KeyType.EC_P256, KeyType.RSA_2048])
async def test_hsm_node_key_attests(
    key_type: KeyType, softhsm_token: SoftHsmToken, tmp_path: Path
) -> None:
    km = node_key_in_token(softhsm_token, key_type)
    root = make_ca("HSM Test Root")
    # the node certificate names the token key's public half; the private half stays inside
    public = km.get_public_key("x509pop-node")
    node = make_leaf(root, key=km.signer("x509pop-node"))
    assert node.cert.public_key() == public
    cert_path = tmp_path / "node.pem"
    cert_path.write_bytes(node.pem())
    agent = create_agent_attestor(agent_plugin(cert_path, uri_for(softhsm_token)), CONTEXT)
    assert isinstance(agent, X509PopAgentAttestor)

    (tmp_path / "ca.pem").write_bytes(root.pem())
    cfg = X509PopServerConfig.from_plugin_data({"ca_bundle_path": str(tmp_path / "ca.pem")})
    server = X509PopServerAttestor(cfg, TD, ManualClock(NOW))
    result = await server.attest(await agent.payload(), agent.answer)
    assert result.agent_id.path.startswith("/spire/agent/x509pop/")
    assert isinstance(result.agent_id, SpiffeId)


def test_hsm_node_key_cannot_be_exported(softhsm_token: SoftHsmToken) -> None:
    km = node_key_in_token(softhsm_token, KeyType.EC_P256)
    key = CONTEXT.open_key_uri(uri_for(softhsm_token))
    assert key.public_key() == km.get_public_key("x509pop-node")
    with pytest.raises(KeyManagerError, match="cannot be exported"):
        key.private_numbers()


def test_missing_hsm_key_is_a_config_error(softhsm_token: SoftHsmToken, tmp_path: Path) -> None:
    root = make_ca("HSM Missing Root")
    cert_path = tmp_path / "node.pem"
    cert_path.write_bytes(make_leaf(root).pem())
    uri = uri_for(softhsm_token, "nodes/absent")
    with pytest.raises(ConfigError, match="no private key labelled 'nodes/absent'"):
        create_agent_attestor(agent_plugin(cert_path, uri), CONTEXT)


def test_hsm_key_must_match_the_certificate(softhsm_token: SoftHsmToken, tmp_path: Path) -> None:
    node_key_in_token(softhsm_token, KeyType.EC_P256)
    cert_path = tmp_path / "node.pem"
    cert_path.write_bytes(make_leaf(make_ca("HSM Other Root")).pem())
    with pytest.raises(ConfigError, match="private key does not match the node certificate"):
        create_agent_attestor(agent_plugin(cert_path, uri_for(softhsm_token)), CONTEXT)


def test_uri_with_inline_pin_is_refused(tmp_path: Path) -> None:
    cert_path = tmp_path / "node.pem"
    cert_path.write_bytes(make_leaf(make_ca("HSM Pin Root")).pem())
    uri = "pkcs11:token=t;object=k?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234"
    with pytest.raises(ConfigError, match="pin-value is not accepted") as info:
        create_agent_attestor(agent_plugin(cert_path, uri), CONTEXT)
    assert "1234" not in str(info.value)
