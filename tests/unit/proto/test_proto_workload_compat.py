"""Our workload.proto against the `spiffe` PyPI package's generated copy, field by field."""

from google.protobuf.descriptor import Descriptor, FileDescriptor
from spiffe._proto import workload_pb2 as theirs

from plastron.proto.workload import workload_pb2 as ours


def _field_shape(message: Descriptor) -> dict[str, tuple[object, ...]]:
    return {
        f.name: (
            f.number,
            f.type,
            f.is_repeated,
            f.message_type.full_name if f.message_type else None,
        )
        for f in message.fields
    }


def _all_messages(file: FileDescriptor) -> dict[str, Descriptor]:
    found: dict[str, Descriptor] = {}

    def walk(message: Descriptor) -> None:
        found[message.full_name] = message
        for nested in message.nested_types:
            walk(nested)

    for message in file.message_types_by_name.values():
        walk(message)
    return found


def test_every_message_of_theirs_matches_ours() -> None:
    their_messages = _all_messages(theirs.DESCRIPTOR)
    our_messages = _all_messages(ours.DESCRIPTOR)
    assert len(their_messages) >= 12
    for name, their in their_messages.items():
        assert name in our_messages, f"missing message {name}"
        assert _field_shape(our_messages[name]) == _field_shape(their), name
        assert our_messages[name].GetOptions().map_entry == their.GetOptions().map_entry


def test_service_methods_match() -> None:
    their_service = theirs.DESCRIPTOR.services_by_name["SpiffeWorkloadAPI"]
    our_service = ours.DESCRIPTOR.services_by_name["SpiffeWorkloadAPI"]
    assert our_service.full_name == their_service.full_name == "SpiffeWorkloadAPI"
    for method in their_service.methods:
        mine = our_service.methods_by_name[method.name]
        assert mine.input_type.full_name == method.input_type.full_name
        assert mine.output_type.full_name == method.output_type.full_name
        assert mine.client_streaming == method.client_streaming
        assert mine.server_streaming == method.server_streaming


def test_bytes_cross_decode() -> None:
    """Both modules load in one process (private pool) and read each other's bytes."""
    msg = ours.X509SVIDResponse(
        svids=[ours.X509SVID(spiffe_id="spiffe://td/w", x509_svid=b"c", bundle=b"b", hint="h")],
        federated_bundles={"spiffe://peer": b"p"},
    )
    decoded = theirs.X509SVIDResponse.FromString(msg.SerializeToString())
    assert decoded.svids[0].hint == "h"
    assert decoded.federated_bundles["spiffe://peer"] == b"p"
    back = ours.JWTSVIDRequest.FromString(
        theirs.JWTSVIDRequest(audience=["a", "b"], spiffe_id="spiffe://td/w").SerializeToString()
    )
    assert list(back.audience) == ["a", "b"]
    assert back.spiffe_id == "spiffe://td/w"
