"""Envoy SDS stream protocol on the in-process endpoint (real socket, real cache, grpcio client):
versions and nonces, ACK/NACK, stale nonces, names changed mid-stream, SVIDs not minted yet,
a caller losing its entries. Changes are made in the cache, so each push is deterministic."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from agent_authority import entry
from agent_workload_env import WorkloadApiEnv
from sds_envoy import SdsStream, channel, node, request, secrets, tls_certificate

UID = f"unix:uid:{os.geteuid()}"
WORKLOAD = "spiffe://example.org/envoy"


@pytest.fixture
async def sds(workload_api: WorkloadApiEnv) -> AsyncIterator[SdsStream]:
    ca = workload_api.ca
    workload_api.cache.set_entries([entry("e", ca.td, "/envoy", UID)])
    workload_api.cache.set_x509_svids({"e": ca.svid("/envoy")})
    async with channel(workload_api.socket_path) as chan:
        stream = SdsStream(chan)
        yield stream
        stream.cancel()


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> None:
    """Until the agent has logged ``text``: it has processed the request that makes it."""
    end = time.monotonic() + 10
    while text not in caplog.text:
        assert time.monotonic() < end, f"not logged: {text!r}"
        await asyncio.sleep(0.01)  # polling interval


def _serial(response: object) -> int:
    return tls_certificate(secrets(response)[WORKLOAD]).chain[0].serial_number


async def test_versions_and_nonces_advance_per_push_and_acks_send_nothing(
    workload_api: WorkloadApiEnv, sds: SdsStream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="plastron.agent.sds")
    env, ca = workload_api, workload_api.ca
    await sds.send(request([WORKLOAD], node_msg=node("envoy-1")))
    first = await sds.recv()
    assert (first.version_info, len(first.nonce) > 0) == ("1", True)
    await sds.ack(first, [WORKLOAD])  # an ACK: nothing is sent for it
    await _logged(caplog, "SDS version acknowledged node=envoy-1 version=1")
    rotated = ca.svid("/envoy")
    env.cache.set_x509_svids({"e": rotated})
    second = await sds.recv()  # the next message is the rotation, not an answer to the ACK
    assert second.version_info == "2" and second.nonce != first.nonce
    assert _serial(second) == rotated.leaf.serial_number


async def test_nack_is_not_answered_with_the_same_version_the_next_change_is_sent(
    workload_api: WorkloadApiEnv, sds: SdsStream, caplog: pytest.LogCaptureFixture
) -> None:
    env, ca = workload_api, workload_api.ca
    await sds.send(request([WORKLOAD], node_msg=node("envoy-1")))
    first = await sds.recv()
    # NACK: Envoy answers the nonce with its last good version (none) and an error.
    await sds.send(request([WORKLOAD], nonce=first.nonce, version="", error="bad key"))
    await _logged(caplog, "Envoy rejected SDS version node=envoy-1 version=1 kept= error=bad key")
    rotated = ca.svid("/envoy")
    env.cache.set_x509_svids({"e": rotated})
    retry = await sds.recv()
    assert retry.version_info == "2"
    assert _serial(retry) == rotated.leaf.serial_number


async def test_stale_nonce_is_ignored_and_new_names_are_answered(
    workload_api: WorkloadApiEnv, sds: SdsStream
) -> None:
    await sds.send(request([WORKLOAD], node_msg=node("envoy-1")))
    first = await sds.recv()
    # A request answering no response we sent: ignored whole, its names included.
    await sds.send(request(["ROOTCA"], nonce="stale", version=first.version_info))
    await sds.send(request([WORKLOAD, "ROOTCA"], nonce=first.nonce, version="1"))
    second = await sds.recv()
    assert set(secrets(second)) == {WORKLOAD, "ROOTCA"}
    assert second.version_info == "2"


async def test_node_sent_once_is_kept_for_later_requests(
    workload_api: WorkloadApiEnv, sds: SdsStream
) -> None:
    # The node asks for plain trusted_ca contexts; later requests carry no node.
    await sds.send(request(["ROOTCA"], node_msg=node("envoy-1", disable_validator=True)))
    first = await sds.recv()
    await sds.send(request(["ROOTCA", WORKLOAD], nonce=first.nonce, version="1"))
    second = await sds.recv()
    root = secrets(second)["ROOTCA"].validation_context
    assert root.trusted_ca.inline_bytes == workload_api.ca.bundle.to_pem()
    assert not root.HasField("custom_validator_config")


async def test_response_waits_for_an_svid_not_minted_yet(
    workload_api: WorkloadApiEnv, sds: SdsStream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="plastron.agent.sds")
    env, ca = workload_api, workload_api.ca
    later = "spiffe://example.org/later"
    env.cache.set_entries([*env.cache.entries(), entry("l", ca.td, "/later", UID)])
    await sds.send(request([WORKLOAD, later], node_msg=node("envoy-1")))
    await _logged(caplog, f"SDS response waits for {later!r}")
    svid = ca.svid("/later")
    env.cache.set_x509_svids({"l": svid})
    response = await sds.recv()  # the first response already holds both
    assert response.version_info == "1"
    certificate = tls_certificate(secrets(response)[later])
    assert certificate.chain[0].serial_number == svid.leaf.serial_number


async def test_stream_ends_permission_denied_when_the_entry_goes(
    workload_api: WorkloadApiEnv, sds: SdsStream
) -> None:
    await sds.send(request([WORKLOAD], node_msg=node("envoy-1")))
    await sds.recv()
    workload_api.cache.set_entries([])
    error = await sds.error()
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "no identity issued"


async def test_name_not_entitled_ends_the_stream_invalid_argument(
    workload_api: WorkloadApiEnv, sds: SdsStream
) -> None:
    other = "spiffe://example.org/someone-else"
    await sds.send(request([WORKLOAD, other], node_msg=node("envoy-1")))
    error = await sds.error()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (f"workload is not authorized for the requested resources: {other!r}")


async def test_other_type_url_is_refused(workload_api: WorkloadApiEnv, sds: SdsStream) -> None:
    msg = request([WORKLOAD])
    msg.type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    await sds.send(msg)
    error = await sds.error()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'type.googleapis.com/envoy.config.cluster.v3.Cluster' is not served" in (
        error.details() or ""
    )
