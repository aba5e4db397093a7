"""Envoy SDS resource names → Secrets (SPIRE's names and defaults), the SPIFFE validator choice,
the agent's ``sds {}`` config, and the grpclib binding against xds-protos' descriptor."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import pytest
from agent_authority import TestAuthority, entry
from envoy.service.secret.v3 import sds_pb2

from plastron.agent.cache import WorkloadCache
from plastron.agent.config import SdsConfig, parse_agent_config
from plastron.agent.sds.grpc_binding import SecretDiscoveryServiceBase
from plastron.agent.sds.resources import (
    MAX_RESOURCE_NAMES,
    SecretResolver,
    check_type_url,
    why_no_spiffe_validator,
)
from plastron.clock import SystemClock
from plastron.errors import ConfigError, FailedPrecondition, InvalidArgument
from plastron.selector import Selector

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integration" / "agent"))
from sds_envoy import node, spiffe_validator, tls_certificate, trusted_ca

UID = "unix:uid:1000"
SELECTORS = frozenset({Selector.parse(UID)})


class World:
    """A cache holding two entries for the caller, one federating with other.org."""

    def __init__(self) -> None:
        now = SystemClock().now() - dt.timedelta(seconds=5)
        self.ca = TestAuthority("example.org", now)
        self.other = TestAuthority("other.org", now)
        self.cache = WorkloadCache(self.ca.td, SystemClock())
        self.cache.set_bundle(self.ca.bundle)
        self.cache.set_entries(
            [
                entry("b", self.ca.td, "/b", UID, federates_with=(self.other.td,)),
                entry("a", self.ca.td, "/a", UID),
            ]
        )
        self.svids = {"a": self.ca.svid("/a"), "b": self.ca.svid("/b")}
        self.cache.set_x509_svids(self.svids)

    def resolver(self, config: SdsConfig | None = None, node_msg: Any = None) -> SecretResolver:
        return SecretResolver(
            config or SdsConfig(),
            node_msg,
            self.cache.matching_entries(SELECTORS),
            self.cache.update_for(SELECTORS),
        )

    def secrets(self, names: list[str], **kwargs: Any) -> dict[str, Any]:
        resolution = self.resolver(**kwargs).resolve(names)
        assert not resolution.unknown and not resolution.pending, resolution
        return {s.name: s for s in resolution.secrets}


@pytest.fixture
def world() -> World:
    return World()


def test_spiffe_ids_and_default_name_tls_certificates(world: World) -> None:
    found = world.secrets(["spiffe://example.org/b", "default"])
    assert tls_certificate(found["spiffe://example.org/b"]).spiffe_id == "spiffe://example.org/b"
    # default: the first entry in the Workload API's order (by SPIFFE ID), not the first listed
    default = tls_certificate(found["default"])
    assert default.chain[0].serial_number == world.svids["a"].leaf.serial_number


def test_bundles_by_trust_domain_rootca_and_all(world: World) -> None:
    world.cache.set_federated_bundles({world.other.td: world.other.bundle})
    names = ["spiffe://example.org", "spiffe://other.org", "ROOTCA", "ALL"]
    found = world.secrets(names)
    own, other = world.ca.bundle.to_pem(), world.other.bundle.to_pem()
    assert spiffe_validator(found["spiffe://example.org"]) == {"example.org": own}
    assert spiffe_validator(found["ROOTCA"]) == {"example.org": own}
    assert spiffe_validator(found["spiffe://other.org"]) == {"other.org": other}
    assert list(spiffe_validator(found["ALL"]).items()) == [
        ("example.org", own),
        ("other.org", other),
    ]


def test_configured_names(world: World) -> None:
    config = SdsConfig("svid", "own-ca", "every-ca")
    found = world.secrets(["svid", "own-ca", "every-ca"], config=config)
    assert set(found) == {"svid", "own-ca", "every-ca"}
    resolution = world.resolver(config).resolve(["default", "ROOTCA", "ALL"])
    assert resolution.unknown == ["default", "ROOTCA", "ALL"]


def test_wildcard_request_gets_every_bundle_and_svid_by_id(world: World) -> None:
    world.cache.set_federated_bundles({world.other.td: world.other.bundle})
    assert list(world.secrets([])) == [
        "spiffe://example.org",
        "spiffe://other.org",
        "spiffe://example.org/a",
        "spiffe://example.org/b",
    ]
    assert list(world.secrets(["", ""])) == list(world.secrets([]))


@pytest.mark.parametrize(
    ("config_disables", "metadata", "envoy", "spiffe"),
    [
        (False, None, None, True),
        (True, None, None, False),
        (False, True, None, False),
        (True, False, None, True),  # the node overrides the agent's default
        (False, "true", None, False),  # strings Go's ParseBool accepts
        (True, "F", None, True),
        (True, "maybe", None, False),  # unreadable: ignored, as SPIRE does
        (False, 1.0, None, True),
        (False, None, (1, 17), False),  # Envoy before 1.18 has no SPIFFE validator
        (False, None, (1, 18), True),
        (False, None, (2, 0), True),
    ],
)
def test_spiffe_validator_choice(
    world: World,
    config_disables: bool,
    metadata: object,
    envoy: tuple[int, int] | None,
    spiffe: bool,
) -> None:
    config = SdsConfig(disable_spiffe_cert_validation=config_disables)
    node_msg = node("n", disable_validator=metadata, envoy=envoy)
    assert (why_no_spiffe_validator(config, node_msg) is None) == spiffe
    root = world.secrets(["ROOTCA"], config=config, node_msg=node_msg)["ROOTCA"]
    if spiffe:
        assert spiffe_validator(root) == {"example.org": world.ca.bundle.to_pem()}
    else:
        assert trusted_ca(root) == world.ca.bundle.to_pem()


def test_all_bundles_needs_the_spiffe_validator(world: World) -> None:
    resolver = world.resolver(node_msg=node("n", envoy=(1, 17)))
    with pytest.raises(FailedPrecondition) as err:
        resolver.resolve(["ALL"])
    assert str(err.value) == (
        "resource 'ALL' (every bundle) needs Envoy's SPIFFE certificate validator, which is off"
        " for this node: the node runs Envoy 1.17, older than 1.18"
    )


def test_names_not_entitled_are_unknown(world: World) -> None:
    resolution = world.resolver().resolve(
        ["spiffe://example.org/a", "spiffe://example.org/c", "spiffe://third.org", "x"]
    )
    assert resolution.unknown == ["spiffe://example.org/c", "spiffe://third.org", "x"]


def test_entitled_but_not_held_yet_is_pending(world: World) -> None:
    # other.org is federated with, but its bundle has not arrived; /c has no SVID yet
    world.cache.set_entries([*world.cache.entries(), entry("c", world.ca.td, "/c", UID)])
    resolution = world.resolver().resolve(["spiffe://other.org", "spiffe://example.org/c"])
    assert resolution.pending == ["spiffe://other.org", "spiffe://example.org/c"]
    assert not resolution.unknown and not resolution.secrets


def test_default_waits_for_the_first_entry_rather_than_falling_back(world: World) -> None:
    world.cache.set_entries([*world.cache.entries(), entry("0", world.ca.td, "/0", UID)])
    assert world.resolver().resolve(["default"]).pending == ["default"]


def test_too_many_names(world: World) -> None:
    names = [f"spiffe://example.org/n{i}" for i in range(MAX_RESOURCE_NAMES + 1)]
    with pytest.raises(InvalidArgument, match=f"limit {MAX_RESOURCE_NAMES}"):
        world.resolver().resolve(names)


def test_type_url() -> None:
    check_type_url("")
    check_type_url("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret")
    with pytest.raises(InvalidArgument, match="'x' is not served here"):
        check_type_url("x")


# ---- config ----------------------------------------------------------------------------------


def _agent(body: str) -> str:
    return (
        'agent {\n trust_domain = "example.org"\n data_dir = "/d"\n server_address = "s"\n'
        f' trust_bundle_path = "/b.pem"\n{body}\n}}\nplugins {{ NodeAttestor "join_token" {{}} }}'
    )


def test_sds_config_defaults_are_spires() -> None:
    config = parse_agent_config(_agent(""))
    assert config.sds == SdsConfig("default", "ROOTCA", "ALL", False)
    assert config.disable_sds_api is False


def test_sds_config_keys() -> None:
    config = parse_agent_config(
        _agent(
            'disable_sds_api = true\n sds {\n default_svid_name = "svid"\n'
            ' default_bundle_name = ""\n default_all_bundles_name = "every"\n'
            " disable_spiffe_cert_validation = true\n }"
        )
    )
    # an empty name is the default, as SPIRE fills empty keys from its defaults
    assert config.sds == SdsConfig("svid", "ROOTCA", "every", True)
    assert config.disable_sds_api is True


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('sds { default_bundel_name = "x" }', "agent.sds.default_bundel_name"),
        ('sds { default_all_bundles_name = "ROOTCA" }', "default_bundle_name and"),
        ('sds { default_svid_name = "ALL" }', "default_svid_name and default_all_bundles_name"),
        ('sds { disable_spiffe_cert_validation = "yes" }', "must be true or false"),
        ("disable_sds_api = 1", "agent.disable_sds_api must be true or false"),
    ],
)
def test_sds_config_errors(body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_agent_config(_agent(body))


# ---- grpclib binding -------------------------------------------------------------------------


class _Service(SecretDiscoveryServiceBase):
    async def DeltaSecrets(self, stream: Any) -> None: ...
    async def StreamSecrets(self, stream: Any) -> None: ...
    async def FetchSecrets(self, stream: Any) -> None: ...


def test_binding_matches_the_service_descriptor() -> None:
    descriptor = sds_pb2.DESCRIPTOR.services_by_name["SecretDiscoveryService"]
    mapping = _Service().__mapping__()
    assert set(mapping) == {f"/{descriptor.full_name}/{m.name}" for m in descriptor.methods}
    for method in descriptor.methods:
        handler = mapping[f"/{descriptor.full_name}/{method.name}"]
        streaming = (method.client_streaming, method.server_streaming)
        assert handler.cardinality.value == streaming
        assert handler.request_type.DESCRIPTOR.full_name == method.input_type.full_name
        assert handler.reply_type.DESCRIPTOR.full_name == method.output_type.full_name
