"""A status message built from untrusted text can always be sent: grpclib percent-encodes the
grpc-message trailer from UTF-8, which a lone surrogate (JSON "\\ud800") cannot become."""

from __future__ import annotations

from grpclib.const import Status
from grpclib.metadata import encode_grpc_message

from plastron.agent.workloadapi.status import grpc_error as workload_grpc_error
from plastron.errors import AttestationFailed, InvalidArgument
from plastron.server.api.status import grpc_error as server_grpc_error

HOSTILE = "tpm: payload has unknown key \ud800\udfff\n and é"


def test_server_status_message_is_encodable() -> None:
    err = server_grpc_error(AttestationFailed(HOSTILE))
    assert err.status == Status.PERMISSION_DENIED
    assert err.message == "tpm: payload has unknown key \\ud800\\udfff\n and é"
    encode_grpc_message(err.message)


def test_workload_status_message_is_encodable() -> None:
    err = workload_grpc_error(InvalidArgument(HOSTILE))
    assert err.status == Status.INVALID_ARGUMENT
    encode_grpc_message(err.message or "")
