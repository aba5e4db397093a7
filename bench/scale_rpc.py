"""`bench/scale.py`'s real-process figures: cold start to ready, GetAuthorizedEntries and
SyncAuthorizedEntries through mTLS as attested agents, the server's CPU per agent sync, entry
create → visible to its agent, the server's RSS."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scale_fleet import TD, agent_count, agent_id, node_selectors
from scale_raw import RawServer, call_cpu
from scale_server import (
    ServerProcess,
    attest,
    entry_stub,
    get_authorized,
    running_server,
    sync_authorized,
)

from plastron.proto.spire.api.server.entry.v1 import entry_pb2
from plastron.proto.spire.api.types import entry_pb2 as types_entry
from plastron.server.datastore.store import SqlDataStore
from plastron.spiffe.bundle import Bundle

Row = tuple[str, str, str, str, str]
SAMPLE_AGENTS = 20  # attested through the API; agent 0 parents N/20 entries, the rest ~100
SYNC_INTERVAL_S = 5.0
CALLS = 200
CALLS_BIG = 50
# /proc counts CPU in 10 ms ticks: each CPU figure is taken over a few hundred calls (0.2 s or
# more of server CPU), so that a tick is a few percent of it.
SYNC_FLOOR_CALLS = 600
CPU_CALLS_BIG = 200
CHANGE_ROUNDS = 20  # of one sync per ordinary sample agent (19)
VISIBLE_TRIALS = 20
VISIBLE_TIMEOUT_S = 10.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(values: list[float]) -> str:
    return f"{pct(values, 0.5) * 1e3:.2f}/{pct(values, 0.99) * 1e3:.2f} ms"


@dataclass
class Agents:
    stubs: list[Any]  # an EntryStub per sample agent, over its own mTLS channel
    empty: Any  # an EntryStub of an attested agent authorized for nothing: the RPC's floor
    counts: list[int]  # how many entries each is authorized for


async def cold_start_empty(tmp: Path, database_type: str, connection: str) -> tuple[float, float]:
    """Seconds to ready and RSS (MiB) of the same server over an empty datastore."""
    async with running_server(tmp, database_type, connection) as (server, seconds):
        return seconds, server.memory_mib()[0]


async def attest_samples(server: ServerProcess, store: SqlDataStore, n: int) -> Agents:
    bundle = Bundle.from_json(await store.fetch_bundle(TD) or b"")
    stubs = []
    for i in range(SAMPLE_AGENTS):
        identity = await attest(server, bundle, f"node-{i}")
        await store.set_node_selectors(agent_id(i), node_selectors(n, i))
        stubs.append(entry_stub(server.tls(bundle, identity)))
    empty = entry_stub(server.tls(bundle, await attest(server, bundle, "no-entries")))
    # The server applies the node selectors from the change events at its next poll.
    deadline = time.monotonic() + VISIBLE_TIMEOUT_S
    counts = [await get_authorized(s) for s in stubs]
    while min(counts[1:]) == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        counts = [await get_authorized(s) for s in stubs]
    return Agents(stubs, empty, counts)


async def timed(call: Callable[[Any], Awaitable[int]], stub: Any, times: int) -> list[float]:
    out = []
    for _ in range(times):
        start = time.perf_counter()
        await call(stub)
        out.append(time.perf_counter() - start)
    return out


async def call_rows(server: ServerProcess, agents: Agents, raw: RawServer) -> list[Row]:
    """Each call's latency beside the same call by an agent authorized for nothing (TLS,
    HTTP/2, grpclib, authorization: everything but the entries); the largest agent's
    GetAuthorizedEntries also beside the server's transport alone sending the same bytes."""
    rows: list[Row] = []
    for name, call in (
        ("GetAuthorizedEntries", get_authorized),
        ("SyncAuthorizedEntries", sync_authorized),
    ):
        for i in (1, 0):
            times = CALLS if i else CALLS_BIG
            lat = await timed(call, agents.stubs[i], times)
            floor = await timed(call, agents.empty, times)
            limit = f"no entries {ms(floor)}"
            if name == "GetAuthorizedEntries" and i == 0:
                raw_lat, _ = await call_cpu(raw, call, entry_stub(raw.channel), times)
                limit += f"; transport alone, same {raw.payload_bytes:,} bytes {ms(raw_lat)}"
            rows.append(
                (
                    f"{name} p50/p99, agent with {agents.counts[i]}",
                    ms(lat),
                    limit,
                    "p99 5 ms",
                    f"{pct(lat, 0.99) / 5e-3:.2f}",
                )
            )
    _, big = await call_cpu(server, get_authorized, agents.stubs[0], CPU_CALLS_BIG)
    _, raw_big = await call_cpu(raw, get_authorized, entry_stub(raw.channel), CPU_CALLS_BIG)
    rows.append(
        (
            f"server CPU per GetAuthorizedEntries, agent with {agents.counts[0]}",
            f"{big * 1e3:.2f} ms",
            f"transport alone, same bytes {raw_big * 1e3:.2f} ms",
            "",
            "",
        )
    )
    return rows


async def server_cpu_per_call(
    server: ServerProcess, call: Callable[[Any], Awaitable[int]], stubs: list[Any]
) -> float:
    start = server.cpu_seconds()
    for stub in stubs:
        await call(stub)
    return (server.cpu_seconds() - start) / len(stubs)


async def touch_sample_aliases(server: ServerProcess, serial: int) -> None:
    """One new entry under each ordinary sample agent's node alias: a change reaching each."""
    batch = []
    for i in range(1, SAMPLE_AGENTS):
        e = types_entry.Entry(
            spiffe_id={"trust_domain": TD.name, "path": f"/touch/{serial}/{i}"},
            parent_id={"trust_domain": TD.name, "path": f"/alias/{i}"},
        )
        e.selectors.add(type="unix", value=f"touch:{serial}:{i}")
        batch.append(e)
    await entry_stub(server.local()).BatchCreateEntry(
        entry_pb2.BatchCreateEntryRequest(entries=batch)
    )


async def cpu_rows(server: ServerProcess, agents: Agents, n: int, raw: RawServer) -> list[Row]:
    """Server CPU per sync of an ordinary agent, scaled to every agent once per 5 s, beside
    the server CPU of the same sync by an agent authorized for nothing, and of one empty sync
    page from the server's transport alone."""
    rows: list[Row] = []
    ordinary = agents.stubs[1:]
    floor = await server_cpu_per_call(server, sync_authorized, [agents.empty] * SYNC_FLOOR_CALLS)
    _, bare = await call_cpu(raw, sync_authorized, entry_stub(raw.channel), SYNC_FLOOR_CALLS)
    for changed in (True, False):
        per_sync = []
        for round_ in range(CHANGE_ROUNDS):
            if changed:
                await touch_sample_aliases(server, round_)
            per_sync.append(await server_cpu_per_call(server, sync_authorized, ordinary))
        share = statistics.mean(per_sync) * agent_count(n) / SYNC_INTERVAL_S
        when = "after a change reaching each" if changed else "nothing changed"
        rows.append(
            (
                f"server CPU, {agent_count(n)} agents syncing every 5 s, {when}",
                f"{share:.0%} of a core ({statistics.mean(per_sync) * 1e3:.2f} ms/sync)",
                f"no entries {floor * 1e3:.2f} ms/sync; transport alone {bare * 1e3:.2f} ms",
                "50% of a core",
                f"{share / 0.5:.2f}",
            )
        )
    return rows


def _visible_entry(i: int) -> types_entry.Entry:
    e = types_entry.Entry(
        spiffe_id={"trust_domain": TD.name, "path": f"/visible/{i}"},
        parent_id={"trust_domain": TD.name, "path": agent_id(1).path},
    )
    e.selectors.add(type="unix", value=f"visible:{i}")
    return e


async def visible_rows(server: ServerProcess, agents: Agents) -> list[Row]:
    """BatchCreateEntry on the admin socket, then GetAuthorizedEntries as the agent until the
    new entry is there."""
    admin = entry_stub(server.local())
    creates, visible = [], []
    for i in range(VISIBLE_TRIALS):
        start = time.perf_counter()
        resp = await admin.BatchCreateEntry(
            entry_pb2.BatchCreateEntryRequest(entries=[_visible_entry(i)])
        )
        creates.append(time.perf_counter() - start)
        new_id = resp.results[0].entry.id
        while True:
            got = await agents.stubs[1].GetAuthorizedEntries(
                entry_pb2.GetAuthorizedEntriesRequest()
            )
            if any(e.id == new_id for e in got.entries):
                break
            if time.perf_counter() - start > VISIBLE_TIMEOUT_S:
                raise RuntimeError("a created entry did not reach its agent in 10 s")
        visible.append(time.perf_counter() - start)
    return [
        (
            "entry create → visible to its agent p50/p99",
            ms(visible),
            f"{statistics.median(creates) * 1e3:.2f} ms the create RPC (p50)",
            "",
            "",
        )
    ]


def memory_row(server: ServerProcess, empty_rss: float) -> Row:
    rss, peak = server.memory_mib()
    return (
        "server RSS (now / peak)",
        f"{rss:.0f} / {peak:.0f} MiB",
        f"{empty_rss:.0f} MiB with an empty datastore",
        "1 GiB",
        f"{peak / 1024:.2f}",
    )


async def server_rows(
    store: SqlDataStore,
    n: int,
    tmp: Path,
    database: tuple[str, str, str],
) -> list[Row]:
    """``database``: its type, the fleet's connection string, an empty one's."""
    database_type, connection, empty = database
    empty_s, empty_rss = await cold_start_empty(tmp / "empty", database_type, empty)
    async with running_server(tmp / "fleet", database_type, connection) as (server, ready_s):
        rows: list[Row] = [
            (
                f"server cold start to /ready ({n} entries)",
                f"{ready_s:.2f} s",
                f"{empty_s:.2f} s with an empty datastore",
                "",
                "",
            )
        ]
        agents = await attest_samples(server, store, n)
        biggest = await agents.stubs[0].GetAuthorizedEntries(
            entry_pb2.GetAuthorizedEntriesRequest()
        )
        raw = RawServer(tmp / "raw", biggest.SerializeToString())
        try:
            await get_authorized(entry_stub(raw.channel))  # connected before anything is timed
            rows += await call_rows(server, agents, raw)
            rows += await cpu_rows(server, agents, n, raw)
        finally:
            raw.close()
        rows += await visible_rows(server, agents)
        rows.append(memory_row(server, empty_rss))
        return rows
