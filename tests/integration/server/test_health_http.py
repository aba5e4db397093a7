"""The health_checks HTTP listener: /live and /ready with per-subsystem JSON."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from .server_harness import free_port, running_server


async def http(port: int, request: bytes) -> tuple[int, dict[str, object]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


async def test_live_ready_and_bad_requests(tmp_path: Path) -> None:
    port = free_port()
    async with running_server(
        tmp_path,
        extra_top=(
            'health_checks {\n  listener_enabled = true\n  bind_address = "127.0.0.1"\n'
            f"  bind_port = {port}\n}}\n"
        ),
    ) as h:
        assert h.server.health_http is not None
        code, body = await http(port, b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert code == 200 and body["live"] is True
        code, body = await http(port, b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
        assert code == 200 and body["ready"] is True
        subsystems = body["subsystems"]
        assert isinstance(subsystems, dict) and set(subsystems) == {"datastore", "ca"}
        code, _ = await http(port, b"GET /nope HTTP/1.1\r\n\r\n")
        assert code == 404
        code, _ = await http(port, b"POST /ready HTTP/1.1\r\n\r\n")
        assert code == 405
