"""The server sends DATA frames of at most 16 KiB even to a peer that advertises 16 MiB frames
and wide-open windows (plastron/transport/h2_frames.py): a large answer is not one frame
written at once, over the connection's unsent-output cap."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from grpclib.const import Status
from h2.events import DataReceived, Event
from h2.settings import SettingCodes

from plastron.proto.workload import workload_pb2
from plastron.transport.h2_frames import MAX_SENT_FRAME_BYTES
from plastron.transport.limits import MiB
from plastron.transport.server import start_server
from tests.raw_h2 import WORKLOAD_HEADER, RawH2Client, grpc_frame
from tests.unit.transport.test_unsent_output_cap import FETCH_JWT_SVID, SizedFetch

ANSWER_BYTES = 1 * MiB
LARGEST_FRAME_SIZE = 2**24 - 1  # RFC 9113 section 6.5.2


class FrameRecordingClient(RawH2Client):
    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.data_frames: list[int] = []

    def _on_event(self, event: Event) -> None:
        if isinstance(event, DataReceived):
            self.data_frames.append(len(event.data or b""))
        super()._on_event(event)


def _fetch_with_large_frames(path: str) -> tuple[int | None, bytes, list[int]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(path)
    client = FrameRecordingClient(sock)
    client.h2.update_settings(
        {
            SettingCodes.MAX_FRAME_SIZE: LARGEST_FRAME_SIZE,
            SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1,
        }
    )
    client.h2.increment_flow_control_window(2**31 - 1 - 65_535)
    client.wait_settings()
    call = client.open_call(FETCH_JWT_SVID, WORKLOAD_HEADER)
    request = workload_pb2.JWTSVIDRequest(audience=[str(ANSWER_BYTES)]).SerializeToString()
    client.send(call, grpc_frame(request), end=True)
    outcome = client.wait_closed(call)
    client.close()
    return outcome.grpc_status, outcome.data, client.data_frames


async def test_frames_stay_at_16_kib_whatever_the_peer_allows(tmp_path: Path) -> None:
    path = str(tmp_path / "api.sock")
    async with await start_server([SizedFetch()], uds_path=path):
        status, data, frames = await asyncio.to_thread(_fetch_with_large_frames, path)
    assert status == Status.OK.value
    reply = workload_pb2.JWTSVIDResponse.FromString(data[5:])
    assert reply.svids[0].svid == "x" * ANSWER_BYTES
    assert frames and max(frames) <= MAX_SENT_FRAME_BYTES, max(frames)
    assert sum(frames) == len(data)
