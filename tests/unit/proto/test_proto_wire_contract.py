"""Spot checks that our protos carry SPIRE's and SPIFFE's wire names and numbers."""

from google.protobuf.descriptor import FieldDescriptor

from plastron.proto.grpc.health.v1 import health_grpc, health_pb2
from plastron.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2, agent_pb2_grpc
from plastron.proto.spire.api.server.entry.v1 import entry_pb2 as entry_api_pb2
from plastron.proto.spire.api.server.svid.v1 import svid_grpc
from plastron.proto.spire.api.types import entry_pb2, selector_pb2, spiffeid_pb2, status_pb2
from plastron.proto.workload import workload_grpc, workload_pb2


def _number(message: type, field: str) -> int:
    return int(message.DESCRIPTOR.fields_by_name[field].number)  # type: ignore[attr-defined]


def test_spire_field_numbers_and_full_names() -> None:
    assert entry_pb2.Entry.DESCRIPTOR.full_name == "spire.api.types.Entry"
    assert _number(entry_pb2.Entry, "hint") == 14
    assert _number(entry_pb2.Entry, "additional_attributes") == 16
    assert _number(entry_pb2.Entry, "jwt_svid_ttl") == 13
    assert _number(entry_api_pb2.SyncAuthorizedEntriesResponse, "more") == 3
    assert _number(agent_pb2.AttestAgentRequest, "challenge_response") == 2
    reasons = status_pb2.PermissionDeniedDetails.Reason
    assert reasons.Value("AGENT_MUST_REATTEST") == 5
    assert selector_pb2.SelectorMatch.MatchBehavior.Value("MATCH_ANY") == 3
    additional = entry_pb2.Entry.DESCRIPTOR.fields_by_name["additional_attributes"]
    assert additional.has_presence  # proto3 `optional`


def test_workload_field_numbers() -> None:
    assert workload_pb2.X509SVIDResponse.DESCRIPTOR.full_name == "X509SVIDResponse"
    assert _number(workload_pb2.X509SVIDResponse, "federated_bundles") == 3
    assert _number(workload_pb2.X509SVID, "hint") == 5
    claims = workload_pb2.ValidateJWTSVIDResponse.DESCRIPTOR.fields_by_name["claims"]
    assert claims.message_type is not None
    assert claims.message_type.full_name == "google.protobuf.Struct"
    assert claims.type == FieldDescriptor.TYPE_MESSAGE


def test_method_paths() -> None:
    assert "/spire.api.server.agent.v1.Agent/AttestAgent" in _grpclib_paths(agent_grpc)
    assert "/spire.api.server.svid.v1.SVID/NewDownstreamX509CA" in _grpclib_paths(svid_grpc)
    assert "/SpiffeWorkloadAPI/FetchX509SVID" in _grpclib_paths(workload_grpc)
    assert "/grpc.health.v1.Health/Watch" in _grpclib_paths(health_grpc)
    # grpcio stubs too (the tests' interop clients).
    source = agent_pb2_grpc.__loader__.get_source(agent_pb2_grpc.__name__)  # type: ignore[union-attr]
    assert source is not None and "/spire.api.server.agent.v1.Agent/RenewAgent" in source


def _grpclib_paths(module: object) -> set[str]:
    paths: set[str] = set()
    for name in dir(module):
        obj = getattr(module, name)
        if isinstance(obj, type) and name.endswith("Base"):
            paths.update(obj.__mapping__(_AnyHandler()).keys())  # type: ignore[attr-defined]
    return paths


class _AnyHandler:
    def __getattr__(self, name: str) -> object:
        return lambda stream: None


def test_round_trip_attest_messages() -> None:
    req = agent_pb2.AttestAgentRequest(
        params=agent_pb2.AttestAgentRequest.Params(
            data={"type": "join_token", "payload": b"tok"}, params={"csr": b"\x30\x00"}
        )
    )
    again = agent_pb2.AttestAgentRequest.FromString(req.SerializeToString())
    assert again.WhichOneof("step") == "params"
    assert again.params.data.type == "join_token"
    assert again.params.params.csr == b"\x30\x00"
    # Field 2 of the oneof, bytes, tag 0x12.
    challenge = agent_pb2.AttestAgentRequest(challenge_response=b"ok").SerializeToString()
    assert challenge == b"\x12\x02ok"


def test_round_trip_entry() -> None:
    entry = entry_pb2.Entry(
        id="e1",
        spiffe_id=spiffeid_pb2.SPIFFEID(trust_domain="example.org", path="/web"),
        selectors=[selector_pb2.Selector(type="unix", value="uid:1000")],
        hint="internal",
        additional_attributes=entry_pb2.Entry.AdditionalAttributes(jwt_svid_include_jti=True),
    )
    wire = entry.SerializeToString()
    assert b"\x72\x08internal" in wire  # field 14, wire type 2
    again = entry_pb2.Entry.FromString(wire)
    assert again == entry
    assert again.HasField("additional_attributes")


def test_round_trip_workload_and_health() -> None:
    resp = workload_pb2.X509SVIDResponse(
        svids=[workload_pb2.X509SVID(spiffe_id="spiffe://td/a", x509_svid=b"\x30")],
        federated_bundles={"spiffe://other": b"\x30\x01"},
    )
    again = workload_pb2.X509SVIDResponse.FromString(resp.SerializeToString())
    assert again.federated_bundles["spiffe://other"] == b"\x30\x01"
    validated = workload_pb2.ValidateJWTSVIDResponse(spiffe_id="spiffe://td/a")
    validated.claims.update({"sub": "spiffe://td/a", "aud": ["x"]})
    decoded = workload_pb2.ValidateJWTSVIDResponse.FromString(validated.SerializeToString())
    assert decoded.claims.fields["aud"].list_value.values[0].string_value == "x"
    status = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
    assert status.SerializeToString() == b"\x08\x01"
