"""A Workload API request that is not protobuf is the caller's error (INVALID_ARGUMENT), not
an application error with a traceback in the agent's log."""

from __future__ import annotations

import logging

import pytest
from agent_workload_env import WorkloadApiEnv
from grpclib.client import Channel
from grpclib.const import Status

from plastron.proto.workload import workload_pb2 as pb
from tests.raw_grpc import call_with_raw_bytes

METHODS = {
    "/SpiffeWorkloadAPI/FetchJWTSVID": pb.JWTSVIDResponse,
    "/SpiffeWorkloadAPI/ValidateJWTSVID": pb.ValidateJWTSVIDResponse,
    "/SpiffeWorkloadAPI/FetchX509SVID": pb.X509SVIDResponse,
}


async def test_undecodable_request_is_invalid_argument(
    workload_api: WorkloadApiEnv, caplog: pytest.LogCaptureFixture
) -> None:
    channel = Channel(path=workload_api.socket_path)
    try:
        for method, reply in METHODS.items():
            err = await call_with_raw_bytes(
                channel, method, b"\xff\xff\xff\xff", reply, metadata={"workload.spiffe.io": "true"}
            )
            assert err is not None, method
            assert err.status == Status.INVALID_ARGUMENT, (method, err)
            assert (err.message or "").startswith("request is not a valid message: "), err
    finally:
        channel.close()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
