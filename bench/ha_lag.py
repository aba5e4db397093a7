"""Two servers sharing one PostgreSQL database (HA from the datastore's point of view): how long
an entry written through server 1 takes to be in server 2's authorized-entry cache, while
server 1 takes --rate writes per second.

Both are real ``plastron-server run`` processes on a PostgreSQL database this script creates
and drops (``postgres@127.0.0.1:5432``). --observers agents attested to server 2 each hold an
``EntryNotifier/Watch`` stream there; the entries are parented to them in turn, so server 2
pushes as soon as its cache applied them (it reads the change events every
``experimental.cache_reload_interval``). On each push the agent calls GetAuthorizedEntries on
server 2; an entry's lag is from its BatchCreateEntry returning on server 1 (committed) until it
is first in that answer (the answer's own time included, so the figure errs high; several
observers keep each answer small, as an ordinary agent's is).

Figures per poll interval (--intervals): lag p50 / p99 / max over every entry written, beside
the raw limit: the poll interval itself (the lag of an entry committed just after a poll), and
the create RPC's p50; the write rate server 1 sustained.

    .venv/bin/python bench/ha_lag.py [--rate 100] [--seconds 15] [--intervals 1s,500ms,250ms]
        [--observers 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

import psycopg
from push_clients import ServerEndpoint, entry_message, pct

from plastron.configs.duration import parse_duration
from plastron.proto.entrynotifier.v1 import entrynotifier_pb2
from plastron.proto.entrynotifier.v1.entrynotifier_grpc import EntryNotifierStub
from plastron.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from plastron.spiffe.ids import SpiffeId

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
from tests.integration.security.server_process import (  # noqa: E402 - the test harness
    ServerProcess,
    remove_base,
    short_base,
)

PG_ADMIN = "dbname=postgres user=postgres host=127.0.0.1 port=5432"
WRITERS = 16  # concurrent create calls: one at a time cannot reach 100/s on a loaded machine


def datastore_block(dbname: str) -> str:
    return (
        'DataStore "sql" { plugin_data { database_type = "postgres"\n'
        f'  connection_string = "dbname={dbname} user=postgres host=127.0.0.1 port=5432" }} }}'
    )


def start_server(dbname: str, interval: str) -> ServerProcess:
    server = ServerProcess(
        short_base("pha-"),
        extra_server=f'experimental {{ cache_reload_interval = "{interval}" }}',
        plugins=datastore_block(dbname),
    )
    server.start()
    return server


def endpoint(server: ServerProcess) -> ServerEndpoint:
    return ServerEndpoint(server.socket_path, server.port)


class Writer:
    """Entries parented to ``parent`` through server 1, at ``rate`` per second."""

    def __init__(self, server: ServerEndpoint, parents: list[SpiffeId], rate: float) -> None:
        self.server, self.parents, self.rate = server, parents, rate
        self.committed: dict[str, float] = {}
        self.create_times: list[float] = []

    async def run(self, seconds: float) -> float:
        total = int(seconds * self.rate)
        started = time.perf_counter()
        await asyncio.gather(*(self._write(k, total, started) for k in range(WRITERS)))
        return total / (time.perf_counter() - started)

    async def _write(self, first: int, total: int, started: float) -> None:
        channel = self.server.local()
        try:
            for i in range(first, total, WRITERS):
                delay = started + i / self.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent = time.perf_counter()
                parent = self.parents[i % len(self.parents)]
                message = entry_message(f"/ha/{uuid.uuid4().hex}", parent, "unix:uid:1")
                entry_id = await self.server.create_entry(channel, message)
                done = time.perf_counter()
                self.committed[entry_id] = done
                self.create_times.append(done - sent)
        finally:
            channel.close()


class Observer:
    """The agents on server 2: on every push, which entries their server now authorizes."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.call_times: list[float] = []

    async def run(self, server: ServerEndpoint, chain: list, key: object) -> None:
        channel = await server.tls(chain, key)
        try:
            stub = EntryNotifierStub(channel)
            entries = entry_grpc.EntryStub(channel)
            async with stub.Watch.open() as stream:
                await stream.send_message(entrynotifier_pb2.WatchRequest(), end=True)
                while await stream.recv_message() is not None:
                    asked = time.perf_counter()
                    resp = await entries.GetAuthorizedEntries(
                        entry_pb2.GetAuthorizedEntriesRequest(), timeout=60
                    )
                    now = time.perf_counter()
                    self.call_times.append(now - asked)
                    for entry in resp.entries:
                        self.seen.setdefault(entry.id, now)
        finally:
            channel.close()


async def one_interval(
    first: ServerProcess, second: ServerProcess, args: argparse.Namespace
) -> dict[str, float]:
    one, two = endpoint(first), endpoint(second)
    agents = [await two.attest() for _ in range(args.observers)]
    observer = Observer()
    watching = [asyncio.create_task(observer.run(two, chain, key)) for _, chain, key in agents]
    writer = Writer(one, [agent_id for agent_id, _, _ in agents], args.rate)
    try:
        rate = await writer.run(args.seconds)
        last = max(writer.committed.values())
        while set(writer.committed) - set(observer.seen):
            if time.perf_counter() - last > 30:
                raise RuntimeError("entries written on server 1 never reached server 2's cache")
            await asyncio.sleep(0.05)
    finally:
        for task in watching:
            task.cancel()
    lags = [observer.seen[eid] - done for eid, done in writer.committed.items()]
    return {
        "rate": rate,
        "n": len(lags),
        "p50": pct(lags, 0.5),
        "p99": pct(lags, 0.99),
        "max": max(lags),
        "create_p50": statistics.median(writer.create_times),
        "call_p50": statistics.median(observer.call_times),
    }


def run(args: argparse.Namespace, dbname: str) -> list[tuple[str, dict[str, float]]]:
    results = []
    first = start_server(dbname, "1s")
    try:
        for interval in args.intervals.split(","):
            second = start_server(dbname, interval)
            try:
                results.append((interval, asyncio.run(one_interval(first, second, args))))
            finally:
                second.stop()
                remove_base(second.base)
    finally:
        first.stop()
        remove_base(first.base)
    return results


def print_table(results: list[tuple[str, dict[str, float]]], rate: float) -> None:
    header = (
        "server 2 poll interval", "writes/s", "entries", "lag p50", "lag p99", "lag max",
        "raw limit (interval)", "p99 / interval", "create RPC p50", "GetAuthorized p50",
    )  # fmt: skip
    rows = [header]
    for interval, r in results:
        seconds = parse_duration(interval).total_seconds()
        rows.append((interval, f"{r['rate']:.0f} (asked {rate:.0f})", f"{r['n']:.0f}",
                     f"{r['p50'] * 1000:.0f} ms", f"{r['p99'] * 1000:.0f} ms",
                     f"{r['max'] * 1000:.0f} ms", f"{seconds * 1000:.0f} ms",
                     f"{r['p99'] / seconds:.2f}", f"{r['create_p50'] * 1000:.1f} ms",
                     f"{r['call_p50'] * 1000:.1f} ms"))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=100.0, help="writes per second on server 1")
    ap.add_argument("--seconds", type=float, default=15.0, help="how long server 1 is written")
    ap.add_argument(
        "--intervals", default="1s,500ms,250ms", help="server 2's cache_reload_interval"
    )
    ap.add_argument("--observers", type=int, default=20, help="agents on server 2")
    args = ap.parse_args()
    dbname = f"plastron_ha_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
    except psycopg.OperationalError as exc:
        print(f"ha_lag: PostgreSQL at 127.0.0.1:5432 not reachable: {exc}", file=sys.stderr)
        return 1
    try:
        results = run(args, dbname)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    print_table(results, args.rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
