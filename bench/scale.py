"""Fleet-scale figures on SQLite and PostgreSQL (issue #18 item 1).

The fleet at ``--entries`` N (100,000 by default; bench/scale_fleet.py): N/10 attested agents
with node selectors, N/100 node aliases each matching ten agents, one agent parenting N/20
entries, the rest spread so an ordinary agent is authorized for about 100. Per backend, in a
database this run creates (and drops):

* in-process: the datastore read behind a full entry-cache rebuild and the rebuild itself;
  the authorized-entry lookup for an agent with ~100 and with N/20 entries, after a change
  reaching that agent and with nothing changed; the CPU of every agent's lookup once per 5 s;
* a real ``plastron-server run`` process (bench/scale_rpc.py): cold start to ``/ready``;
  GetAuthorizedEntries and SyncAuthorizedEntries p50/p99 over mTLS as attested agents; the
  server's CPU per agent sync, scaled to every agent once per 5 s; entry create → visible to
  its agent; the server's RSS.

Each figure is printed beside its raw limit measured in the same run, and the issue's goal.

    .venv/bin/python bench/scale.py [--entries 100000] [--runs 3] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
from scale_fleet import TD, agent_count, agent_id, bulk_populate, node_selectors
from scale_rpc import SAMPLE_AGENTS, Row, pct, server_rows

from plastron.clock import SystemClock
from plastron.gcpause import thaw_and_collect
from plastron.server.datastore.config import SqlConfig
from plastron.server.datastore.store import SqlDataStore, open_datastore
from plastron.server.entrycache import AuthorizedEntryCache

BACKENDS = {"sqlite": "sqlite3", "postgresql": "postgres"}
PG_ADMIN = "dbname=postgres user=postgres host=127.0.0.1"
SYNC_INTERVAL_S = 5.0
LOOKUPS = 200


def pg_connection(dbname: str) -> str:
    return f"dbname={dbname} user=postgres host=127.0.0.1"


@asynccontextmanager
async def databases(backend: str, tmp: Path) -> AsyncIterator[tuple[str, str]]:
    """Connection strings of two new databases, the fleet's and an empty one; dropped after."""
    if backend == "sqlite3":
        yield str(tmp / "fleet.sqlite3"), str(tmp / "empty.sqlite3")
        return
    names = [f"plastron_scale_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        for name in names:
            admin.execute(f"CREATE DATABASE {name}")
    try:
        yield pg_connection(names[0]), pg_connection(names[1])
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            for name in names:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def rebuild_rows(
    store: SqlDataStore, cache: AuthorizedEntryCache, n: int, runs: int
) -> list[Row]:
    """The rebuild beside the datastore read it starts with. A rebuild also starts with one
    full collection over the previous cache (thawed from gc.freeze); that pass is timed on
    its own here and shown beside."""
    reads, read_cpu, rebuilds, rebuild_cpu, gc_passes = [], [], [], [], []
    for run in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        await store.list_all_entries()
        await store.list_node_selectors()
        reads.append(time.perf_counter() - wall)
        read_cpu.append(time.process_time() - cpu)
        wall = time.perf_counter()
        thaw_and_collect()
        if run:  # the first rebuild has nothing frozen before it
            gc_passes.append(time.perf_counter() - wall)
        wall, cpu = time.perf_counter(), time.process_time()
        await cache.rebuild()
        rebuilds.append(time.perf_counter() - wall)
        rebuild_cpu.append(time.process_time() - cpu)
    rebuild = statistics.median(rebuilds)
    read = f"{statistics.median(reads):.2f} / {statistics.median(read_cpu):.2f} s"
    gc_pass = f"{statistics.median(gc_passes):.2f} s" if gc_passes else "-"
    return [
        (
            f"entry-cache full rebuild ({n} entries), wall / this process's CPU",
            f"{rebuild:.2f} / {statistics.median(rebuild_cpu):.2f} s",
            f"datastore read {read}; GC pass before it {gc_pass}",
            "2 s",
            f"{rebuild / 2:.2f}",
        )
    ]


def lookup_times(cache: AuthorizedEntryCache, n: int, agent: int, changed: bool) -> list[float]:
    sid, selectors = agent_id(agent), node_selectors(n, agent)
    times = []
    for _ in range(LOOKUPS):
        if changed:  # what an attestation does: a change reaching this agent only
            cache.set_node_selectors(sid, selectors)
        start = time.perf_counter()
        cache.authorized_entries(sid)
        times.append(time.perf_counter() - start)
    return times


def lookup_rows(cache: AuthorizedEntryCache, n: int) -> list[Row]:
    """Each lookup after a change reaching that agent (its answer computed), beside the same
    lookup with nothing changed (its kept answer copied)."""
    rows: list[Row] = []
    for agent in (1, 0):
        got = len(cache.authorized_entries(agent_id(agent)))
        changed = lookup_times(cache, n, agent, True)
        kept = lookup_times(cache, n, agent, False)
        rows.append(
            (
                f"cache lookup p50/p99, agent with {got}, after a change reaching it",
                f"{pct(changed, 0.5) * 1e3:.3f}/{pct(changed, 0.99) * 1e3:.3f} ms",
                f"unchanged {pct(kept, 0.5) * 1e3:.3f}/{pct(kept, 0.99) * 1e3:.3f} ms",
                "p99 5 ms (RPC)",
                f"{pct(changed, 0.99) / 5e-3:.2f}",
            )
        )
    return rows


async def fleet_cpu_rows(cache: AuthorizedEntryCache, n: int) -> list[Row]:
    """Every agent's lookup once per 5 s right after a full rebuild (every answer computed),
    beside the same with nothing changed (every kept answer copied)."""
    agents = agent_count(n)
    shares = []
    for rebuilt in (True, False):
        if rebuilt:
            await cache.rebuild()
        start = time.process_time()
        for i in range(agents):
            cache.authorized_entries(agent_id(i))
        shares.append((time.process_time() - start) / SYNC_INTERVAL_S)
    return [
        (
            f"cache lookups of {agents} agents every 5 s, after a full rebuild",
            f"{shares[0]:.1%} of a core",
            f"unchanged {shares[1]:.1%}",
            "50% of a core",
            f"{shares[0] / 0.5:.2f}",
        )
    ]


async def in_process_rows(store: SqlDataStore, n: int, runs: int) -> list[Row]:
    cache = AuthorizedEntryCache(TD, store, SystemClock())
    rows = await rebuild_rows(store, cache, n, runs)
    # The sample agents are attested later, through the API: here their selectors are set
    # in the cache only, as attestation does.
    for i in range(SAMPLE_AGENTS):
        cache.set_node_selectors(agent_id(i), node_selectors(n, i))
    rows += lookup_rows(cache, n)
    rows += await fleet_cpu_rows(cache, n)
    return rows


async def run_backend(backend: str, n: int, runs: int) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="pscale-") as d:
        tmp = Path(d)
        async with databases(backend, tmp) as (fleet, empty):
            store = await open_datastore(
                SqlConfig(database_type=backend, connection_string=fleet), clock=SystemClock()
            )
            try:
                took = bulk_populate(store.engine, n, leave_out_agents=SAMPLE_AGENTS)
                print(
                    f"# {backend}: {n} entries, {agent_count(n)} agents in {took:.0f} s",
                    file=sys.stderr,
                )
                rows = await in_process_rows(store, n, runs)
                gc.collect()
                rows += await server_rows(store, n, tmp, (backend, fleet, empty))
                return rows
            finally:
                await store.close()


def print_table(backend: str, rows: list[Row]) -> None:
    head = (f"figure ({backend})", "value", "raw limit (same run)", "goal", "÷ goal")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    for row in [head, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    backends = args.backends.split(",")
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        parser.error(f"--backends: unknown {', '.join(unknown)} (known: {', '.join(BACKENDS)})")
    if args.entries < 2000:
        parser.error("--entries must be at least 2000 (20 node aliases for the sample agents)")
    for backend in backends:
        rows = asyncio.run(run_backend(BACKENDS[backend], args.entries, args.runs))
        print_table(backend, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
