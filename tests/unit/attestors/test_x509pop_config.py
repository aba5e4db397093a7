"""x509pop configuration (server and agent), the agent path template subset, the registry
factories and the spiffe mode."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from x509pop_pki import NOW, Issued, make_ca, make_leaf, new_key, write_files

from plastron.attestors.x509pop.agent import X509PopAgentAttestor
from plastron.attestors.x509pop.config import X509PopAgentConfig, X509PopServerConfig
from plastron.attestors.x509pop.server import X509PopServerAttestor
from plastron.attestors.x509pop.template import TemplateValues
from plastron.attestors.x509pop.template import parse as parse_template
from plastron.attestors.x509pop.wire import Challenge, encode_challenge
from plastron.clock import ManualClock
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import AttestationFailed, ConfigError
from plastron.host_services import HostServices
from plastron.plugins import PluginContext, load_plugins
from plastron.spiffe.ids import SpiffeId, TrustDomain
from plastron.spiffe.x509svid import make_ca_certificate, make_x509_svid

_X509POP = load_plugins(["plastron.attestors.x509pop.plugin"])
SERVER_NODE_ATTESTORS = _X509POP.server_node_attestors
AGENT_NODE_ATTESTORS = _X509POP.agent_node_attestors
TD = TrustDomain("example.org")


@pytest.fixture(scope="module")
def root() -> Issued:
    return make_ca("Config Root")


@pytest.fixture
def bundle(root: Issued, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_bytes(root.pem())
    return path


def plugin(data: dict[str, Any]) -> PluginConfig:
    return PluginConfig(type="NodeAttestor", name="x509pop", plugin_data=data)


# ---- server config ------------------------------------------------------------------------


def test_defaults(bundle: Path) -> None:
    cfg = X509PopServerConfig.from_plugin_data({"ca_bundle_path": str(bundle)})
    assert cfg.mode == "external_pki"
    assert (cfg.max_intermediates, cfg.max_rsa_key_size) == (4, 8192)
    assert cfg.agent_path_template.text == "/{{ .PluginName }}/{{ .Fingerprint }}"
    assert len(cfg.ca_bundle) == 1


def test_ca_bundle_paths_and_relative_paths(bundle: Path, tmp_path: Path) -> None:
    other = make_ca("Second Root")
    (tmp_path / "two.pem").write_bytes(other.pem())
    cfg = X509PopServerConfig.from_plugin_data(
        {"ca_bundle_paths": [str(bundle), "two.pem"]}, base_dir=tmp_path
    )
    assert len(cfg.ca_bundle) == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "one of ca_bundle_path or ca_bundle_paths is required"),
        ({"mode": "pki"}, r"x509pop\.mode must be one of external_pki, spiffe \('pki'\)"),
        ({"mode": 3}, r"x509pop\.mode must be a string"),
        ({"ca_bundle_path": "B", "ca_bundle_paths": ["B"]}, "not both"),
        ({"ca_bundle_paths": "B"}, r"x509pop\.ca_bundle_paths must be a list of strings"),
        ({"ca_bundle_paths": ["B", ""]}, r"x509pop\.ca_bundle_paths has an empty path"),
        ({"ca_bundle_path": 5}, r"x509pop\.ca_bundle_path must be a string"),
        ({"ca_bundle_path": "/nonexistent/ca.pem"}, "cannot read trust bundle"),
        (
            {"ca_bundle_path": "B", "max_intermediates": 0},
            r"x509pop\.max_intermediates must be between 1 and 2147483647 \(0\)",
        ),
        (
            {"ca_bundle_path": "B", "max_rsa_key_size": "big"},
            r"x509pop\.max_rsa_key_size must be an integer",
        ),
        (
            {"ca_bundle_path": "B", "verify_client_ip": "no"},
            r"x509pop\.verify_client_ip must be true or false",
        ),
        ({"ca_bundle_path": "B", "verify_client_ip": True}, "verify_client_ip is not supported"),
        ({"mode": "spiffe", "ca_bundle_path": "B"}, "cannot be used in spiffe mode"),
        (
            {"ca_bundle_path": "B", "agent_path_template": "/{{ .Nope }}"},
            r"x509pop\.agent_path_template: unknown field '\.Nope'",
        ),
        (
            {"ca_bundle_path": "B", "agent_path_template": 7},
            r"x509pop\.agent_path_template must be a string",
        ),
        (
            {"ca_bundle_path": "B", "spiffe_prefix": ["/a"]},
            r"x509pop\.spiffe_prefix must be a string",
        ),
        (
            {"ca_bundle_path": "B", "agent_path_template": "/{{ .Fingerprint | upper }}"},
            "only {{ .Field }}",
        ),
        ({"ca_bundle_path": "B", "agent_path_template": "/{{- .Fingerprint }}"}, "trim markers"),
        ({"ca_bundle_path": "B", "agent_path_template": "/{{ .Fingerprint"}, "unbalanced"),
        (
            {"ca_bundle_path": "B", "agent_path_template": "/x/{{ .Fingerprint }}/"},
            "cannot produce a valid agent ID",
        ),
        (
            {"ca_bundle_path": "B", "agent_path_template": "x/{{ .Fingerprint }}"},
            "cannot produce a valid agent ID",
        ),
        (
            {"ca_bundle_path": "B", "agent_path_template": "/a b/{{ .Fingerprint }}"},
            "cannot produce a valid agent ID",
        ),
        (
            {"ca_bundle_path": "B", "agent_path_template": "/{{ .Subject.Organization }}"},
            "unknown field",
        ),
        ({"ca_bundle_path": "B", "spiffe_prefix": "/a", "svid_prefix": "/b"}, "not both"),
    ],
)
def test_server_config_errors(data: dict[str, Any], message: str, bundle: Path) -> None:
    data = {
        k: (str(bundle) if v == "B" else [str(bundle)] if v == ["B"] else v)
        for k, v in data.items()
    }
    with pytest.raises(ConfigError, match=message):
        X509PopServerConfig.from_plugin_data(data)


def test_ca_file_without_certificates_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match="holds no PEM certificate"):
        X509PopServerConfig.from_plugin_data({"ca_bundle_path": str(bad)})


def test_unknown_plugin_data_key_is_refused(bundle: Path) -> None:
    with pytest.raises(ConfigError, match=r'unknown key ".*plugin_data\.ca_path"'):
        SERVER_NODE_ATTESTORS.create(
            plugin({"ca_path": str(bundle)}), PluginContext(trust_domain=TD)
        )


def test_bad_values_name_their_plugin_data_key(bundle: Path, node_files: dict[str, str]) -> None:
    """The one plugin error format: plugins.<Type>.<name>.plugin_data.<key> and the rule."""
    where = "plugins.NodeAttestor.x509pop.plugin_data"
    with pytest.raises(ConfigError, match=rf"^{where}\.max_intermediates must be between 1 and"):
        SERVER_NODE_ATTESTORS.create(
            plugin({"ca_bundle_path": str(bundle), "max_intermediates": -1}),
            PluginContext(trust_domain=TD),
        )
    unbalanced = rf"^{where}\.agent_path_template '/{{{{ \.Fingerprint': unbalanced"
    with pytest.raises(ConfigError, match=unbalanced):
        SERVER_NODE_ATTESTORS.create(
            plugin({"ca_bundle_path": str(bundle), "agent_path_template": "/{{ .Fingerprint"}),
            PluginContext(trust_domain=TD),
        )
    with pytest.raises(ConfigError, match=rf"^{where}\.private_key_path must be a string"):
        AGENT_NODE_ATTESTORS.create(plugin(node_files | {"private_key_path": 1}), PluginContext())
    with pytest.raises(ConfigError, match=rf'^unknown key "{where}\.private_key"'):
        AGENT_NODE_ATTESTORS.create(plugin(node_files | {"private_key": "k"}), PluginContext())


def test_registry_builds_the_server_half(bundle: Path) -> None:
    built = SERVER_NODE_ATTESTORS.create(
        plugin({"ca_bundle_path": str(bundle)}), PluginContext(trust_domain=TD)
    )
    assert isinstance(built, X509PopServerAttestor)


def test_spiffe_mode_needs_the_trust_bundle_from_the_host() -> None:
    with pytest.raises(ConfigError, match="mode spiffe needs the server's trust bundle"):
        SERVER_NODE_ATTESTORS.create(plugin({"mode": "spiffe"}), PluginContext(trust_domain=TD))


# ---- template -----------------------------------------------------------------------------


def test_template_renders_fields_verbatim() -> None:
    tpl = parse_template("/{{.PluginName}}/{{ .Subject.CommonName }}-{{ .SerialNumberHex }}")
    values = TemplateValues("fp", "example.org", "0a", common_name="Node.7")
    assert tpl.render(values) == "/x509pop/Node.7-0a"


def test_template_unknown_san_key_is_an_attestation_error() -> None:
    tpl = parse_template("/{{ .URISanSelectors.rack }}")
    with pytest.raises(AttestationFailed, match="rack"):
        tpl.render(TemplateValues("fp", "example.org", "0a"))


# ---- spiffe mode --------------------------------------------------------------------------


class TrustDomainCA:
    def __init__(self) -> None:
        self.key = new_key("ec-p256", slot=40)
        self.cert = make_ca_certificate(
            trust_domain=TD,
            public_key=self.key.public_key(),
            issuer=None,
            issuer_key=self.key,
            not_before=NOW - dt.timedelta(days=1),
            not_after=NOW + dt.timedelta(days=1),
        )
        self.authorities: list[x509.Certificate] = [self.cert]

    async def bundle(self) -> Sequence[x509.Certificate]:
        return self.authorities

    def svid(self, path: str, tmp_path: Path) -> X509PopAgentAttestor:
        node_key = new_key("ec-p256", slot=41)
        cert = make_x509_svid(
            spiffe_id=SpiffeId(TD, path),
            public_key=node_key.public_key(),
            issuer=self.cert,
            issuer_key=self.key,
            not_before=NOW - dt.timedelta(hours=1),
            not_after=NOW + dt.timedelta(hours=1),
        )
        data = write_files(tmp_path / "svid", Issued(cert, node_key), [])
        return X509PopAgentAttestor(X509PopAgentConfig.from_plugin_data(data))


def spiffe_server(ca: TrustDomainCA, **data: Any) -> X509PopServerAttestor:
    cfg = X509PopServerConfig.from_plugin_data({"mode": "spiffe", **data})
    return X509PopServerAttestor(cfg, TD, ManualClock(NOW), trust_bundle=ca.bundle)


async def test_spiffe_mode_exchanges_an_svid_under_the_prefix(tmp_path: Path) -> None:
    ca = TrustDomainCA()
    agent = ca.svid("/spire-exchange/host-1", tmp_path)
    result = await spiffe_server(ca).attest(await agent.payload(), agent.answer)
    assert result.agent_id == SpiffeId(TD, "/spire/agent/x509pop/host-1")


async def test_spiffe_mode_refuses_an_svid_outside_the_prefix(tmp_path: Path) -> None:
    ca = TrustDomainCA()
    agent = ca.svid("/other/host-1", tmp_path)
    with pytest.raises(
        AttestationFailed, match=r"is not under spiffe://example\.org/spire-exchange/"
    ):
        await spiffe_server(ca).attest(await agent.payload(), agent.answer)


async def test_spiffe_mode_with_custom_prefix(tmp_path: Path) -> None:
    ca = TrustDomainCA()
    agent = ca.svid("/nodes/rack1/host-1", tmp_path)
    result = await spiffe_server(ca, spiffe_prefix="/nodes").attest(
        await agent.payload(), agent.answer
    )
    assert result.agent_id == SpiffeId(TD, "/spire/agent/x509pop/rack1/host-1")


async def test_spiffe_mode_uses_the_current_bundle(tmp_path: Path) -> None:
    ca = TrustDomainCA()
    agent = ca.svid("/spire-exchange/host-1", tmp_path)
    server = spiffe_server(ca)
    ca.authorities = [make_ca("Rotated Away").cert]
    with pytest.raises(AttestationFailed, match="does not lead to a trusted CA"):
        await server.attest(await agent.payload(), agent.answer)
    ca.authorities = []
    with pytest.raises(AttestationFailed, match=r"no X\.509 authorities"):
        await server.attest(await agent.payload(), agent.answer)


async def test_spiffe_mode_refuses_a_certificate_without_spiffe_id(tmp_path: Path) -> None:
    ca = TrustDomainCA()
    issuer = Issued(ca.cert, ca.key)
    node = make_leaf(issuer, key=new_key("ec-p256", slot=42))
    data = write_files(tmp_path / "plain", node, [])
    agent = X509PopAgentAttestor(X509PopAgentConfig.from_plugin_data(data))
    with pytest.raises(AttestationFailed, match="no SPIFFE ID URI SAN"):
        await spiffe_server(ca).attest(await agent.payload(), agent.answer)


# ---- agent config and half ----------------------------------------------------------------


@pytest.fixture
def node_files(root: Issued, tmp_path: Path) -> dict[str, str]:
    inter = make_ca("Agent Inter", parent=root)
    return write_files(tmp_path / "node", make_leaf(inter), [inter])


@pytest.mark.parametrize(
    ("drop", "add", "message"),
    [
        ("certificate_path", {}, "certificate_path is required"),
        ("private_key_path", {}, "exactly one of private_key_path, private_key_uri"),
        (None, {"private_key_uri": "pkcs11:token=x"}, "exactly one of"),
        ("private_key_path", {"private_key_uri": "file:/key"}, "must be a pkcs11: URI"),
        (None, {"certificate_path": 7}, r"x509pop\.certificate_path must be a string"),
        (None, {"certificate_path": ""}, r"x509pop\.certificate_path must be a non-empty string"),
        (None, {"intermediates_path": 1}, r"x509pop\.intermediates_path must be a string"),
    ],
)
def test_agent_config_errors(
    drop: str | None, add: dict[str, Any], message: str, node_files: dict[str, str]
) -> None:
    data: dict[str, Any] = {k: v for k, v in node_files.items() if k != drop} | add
    with pytest.raises(ConfigError, match=message):
        X509PopAgentConfig.from_plugin_data(data)


def test_agent_refuses_a_key_that_does_not_match_the_certificate(
    node_files: dict[str, str], tmp_path: Path
) -> None:
    other = Issued(make_ca("Unrelated").cert, new_key("ec-p256", slot=9))
    (tmp_path / "other.key").write_bytes(other.key_pem())
    data = node_files | {"private_key_path": str(tmp_path / "other.key")}
    with pytest.raises(ConfigError, match="private key does not match the node certificate"):
        AGENT_NODE_ATTESTORS.create(plugin(data), PluginContext())


def test_agent_key_file_errors_never_echo_the_key(
    node_files: dict[str, str], tmp_path: Path
) -> None:
    secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXNlY3JldA==\n-----END PRIVATE KEY-----\n"
    (tmp_path / "broken.key").write_text(secret)
    data = node_files | {"private_key_path": str(tmp_path / "broken.key")}
    with pytest.raises(ConfigError) as info:
        X509PopAgentAttestor(X509PopAgentConfig.from_plugin_data(data))
    assert "c2VjcmV0" not in str(info.value)
    assert "is not an unencrypted PEM private key" in str(info.value)


async def test_agent_payload_appends_intermediates_file(node_files: dict[str, str]) -> None:
    agent = AGENT_NODE_ATTESTORS.create(plugin(node_files), PluginContext())
    payload = json.loads(await agent.payload())
    assert list(payload) == ["certificates"] and len(payload["certificates"]) == 2


async def test_agent_picks_up_a_renewed_certificate(root: Issued, tmp_path: Path) -> None:
    data = write_files(tmp_path / "n", make_leaf(root, serial=1), [])
    agent = X509PopAgentAttestor(X509PopAgentConfig.from_plugin_data(data))
    first = await agent.payload()
    write_files(tmp_path / "n", make_leaf(root, serial=2), [])
    assert await agent.payload() != first


async def test_agent_refuses_a_challenge_for_another_key_type(node_files: dict[str, str]) -> None:
    agent = X509PopAgentAttestor(X509PopAgentConfig.from_plugin_data(node_files))
    await agent.payload()
    with pytest.raises(AttestationFailed, match="rsa challenge but the node key is ecdsa"):
        await agent.answer(encode_challenge(Challenge("rsa", b"n" * 32)))


async def test_agent_refuses_a_challenge_before_the_payload(node_files: dict[str, str]) -> None:
    agent = X509PopAgentAttestor(X509PopAgentConfig.from_plugin_data(node_files))
    with pytest.raises(AttestationFailed, match="before the payload"):
        await agent.answer(encode_challenge(Challenge("ecdsa", b"n" * 32)))


def test_agent_repr_has_no_key(node_files: dict[str, str]) -> None:
    agent = X509PopAgentAttestor(X509PopAgentConfig.from_plugin_data(node_files))
    assert "BEGIN" not in repr(agent) and "Private" not in repr(agent)


async def test_registry_passes_the_hosts_authorities_in_spiffe_mode(tmp_path: Path) -> None:
    ca = TrustDomainCA()
    # what the server provides for mode spiffe (see docs/plugins/x509pop.md)
    services = HostServices(x509_authorities=ca.bundle)
    context = PluginContext(trust_domain=TD, clock=ManualClock(NOW), services=services)
    server = SERVER_NODE_ATTESTORS.create(plugin({"mode": "spiffe"}), context)
    agent = ca.svid("/spire-exchange/host-9", tmp_path)
    result = await server.attest(await agent.payload(), agent.answer)
    assert result.agent_id == SpiffeId(TD, "/spire/agent/x509pop/host-9")
