"""The health_checks HTTP listener: /live and /ready with per-subsystem JSON."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.datastore_faults import NAME, FaultInjectingDataStore, registries_with_faults

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


async def test_ready_reports_last_error_and_time_since_healthy(tmp_path: Path) -> None:
    """A datastore outage (the health check's own statement failing inside the real sql
    store) shows in /ready as that subsystem's last error; once the store answers again the
    server is ready, the error is still reported with its age, and the last-healthy age is
    fresh."""
    port = free_port()
    top = (
        'health_checks {\n  listener_enabled = true\n  bind_address = "127.0.0.1"\n'
        f"  bind_port = {port}\n}}\n"
    )
    async with running_server(
        tmp_path, registries=registries_with_faults(), datastore=NAME, extra_top=top
    ) as h:
        store = h.server.datastore
        assert isinstance(store, FaultInjectingDataStore)
        code, body = await http(port, b"GET /ready HTTP/1.1\r\n\r\n")
        ds = body["subsystems"]["datastore"]  # type: ignore[index]
        assert code == 200 and ds["last_error"] == "" and ds["last_error_seconds_ago"] is None
        assert 0 <= ds["last_healthy_seconds_ago"] < 60

        store.fail_statement(r"^SELECT 1$", message="database is locked")
        h.server.health.invalidate()
        code, body = await http(port, b"GET /ready HTTP/1.1\r\n\r\n")
        assert code == 500 and body["ready"] is False
        ds = body["subsystems"]["datastore"]  # type: ignore[index]
        assert ds["healthy"] is False and "database is locked" in ds["last_error"]
        assert ds["last_error_seconds_ago"] == 0
        assert ds["last_healthy_seconds_ago"] >= 0  # healthy at the first /ready
        assert body["subsystems"]["ca"]["last_error"] == ""  # type: ignore[index]

        h.server.health.invalidate()
        code, body = await http(port, b"GET /ready HTTP/1.1\r\n\r\n")
        ds = body["subsystems"]["datastore"]  # type: ignore[index]
        assert code == 200 and ds["healthy"] is True and ds["detail"] == ""
        assert "database is locked" in ds["last_error"]  # kept after recovery
        assert ds["last_error_seconds_ago"] >= 0 and ds["last_healthy_seconds_ago"] == 0
