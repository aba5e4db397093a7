"""Fleet-scale figures for the server's authorized-entry cache on SQLite (in-process, no RPC).

A realistic shape at ``--entries`` N (100,000 by default): N/10 attested agents, each with node
selectors (its own and its group's); N/100 node-alias entries (parent: the server), each
matching the ten agents of its group; one agent with N/20 entries parented to it directly (a
parent with thousands of children); the rest spread over the aliases, so an ordinary agent is
authorized for about 100 entries.

Prints one table: the cache's full rebuild beside the datastore read it is built from (the raw
limit, same run); the authorized-entry lookup for an agent with ~100 entries and for the one
with N/20, beside the goal; the CPU the lookups of every agent cost once per 5 s sync interval,
as a fraction of one core; this process's RSS. The figures leave out the RPC (TLS, HTTP/2,
proto) that GetAuthorizedEntries adds (bench/server_api.py measures it at 10,000 entries).

    .venv/bin/python bench/scale.py [--entries 100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from plastron.clock import SystemClock
from plastron.records import AttestedNode, RegistrationEntry
from plastron.selector import Selector
from plastron.server.datastore.config import SqlConfig
from plastron.server.datastore.store import SqlDataStore, open_datastore
from plastron.server.entrycache import AuthorizedEntryCache
from plastron.spiffe.ids import SpiffeId, TrustDomain, server_id

TD = TrustDomain("bench.example")
BATCH = 1000
SYNC_INTERVAL_S = 5.0
Row = tuple[str, str, str, str]


def agent_id(i: int) -> SpiffeId:
    return SpiffeId(TD, f"/spire/agent/x/node-{i}")


def _entry(path: str, parent: SpiffeId, *selectors: Selector) -> RegistrationEntry:
    return RegistrationEntry(
        entry_id="", spiffe_id=SpiffeId(TD, path), parent_id=parent, selectors=selectors
    )


def fleet_entries(n: int) -> list[RegistrationEntry]:
    aliases, big = n // 100, n // 20
    out = [
        _entry(f"/alias/{g}", server_id(TD), Selector("x", f"group:{g}")) for g in range(aliases)
    ]
    out += [_entry(f"/big/{i}", agent_id(0), Selector("unix", f"uid:{i}")) for i in range(big)]
    rest = n - len(out)
    out += [
        _entry(f"/w/{i}", SpiffeId(TD, f"/alias/{i % aliases}"), Selector("unix", f"uid:{i}"))
        for i in range(rest)
    ]
    return out


async def populate(store: SqlDataStore, n: int) -> None:
    entries = fleet_entries(n)
    for start in range(0, len(entries), BATCH):
        await store.create_entries(entries[start : start + BATCH])
    aliases = n // 100
    for i in range(n // 10):
        group = Selector("x", f"group:{i % aliases}")
        node = AttestedNode(
            spiffe_id=agent_id(i),
            attestation_type="x",
            cert_serial=str(i),
            cert_not_after=2**31,
            selectors=(group, Selector("x", f"node:{i}")),
        )
        await store.upsert_attested_node_with_selectors(node)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def measure(store: SqlDataStore, n: int, runs: int) -> list[Row]:
    cache = AuthorizedEntryCache(TD, store, SystemClock())
    reads, rebuilds = [], []
    for _ in range(runs):
        start = time.perf_counter()
        await store.list_all_entries()
        await store.list_node_selectors()
        reads.append(time.perf_counter() - start)
        start = time.perf_counter()
        await cache.rebuild()
        rebuilds.append(time.perf_counter() - start)
    read, rebuild = statistics.median(reads), statistics.median(rebuilds)
    rows = [
        (
            f"cache rebuild ({n} entries)",
            f"{rebuild:.2f} s",
            f"{read:.2f} s datastore read",
            f"{rebuild / read:.2f}x; goal 2 s",
        ),
    ]
    for changed in (True, False):
        rows += lookup_rows(cache, n, changed)
    return rows


def lookup_rows(cache: AuthorizedEntryCache, n: int, changed: bool) -> list[Row]:
    """Lookups and every agent's sync, after a change (each answer computed) or with nothing
    changed since the last sync (answers reused)."""
    when = "after a change" if changed else "unchanged"
    rows: list[Row] = []
    for agent in (agent_id(1), agent_id(0)):  # ~100 entries; the N/20 parent
        got = len(cache.authorized_entries(agent))
        times = []
        for _ in range(200):
            if changed:
                cache.version += 1  # what any entry or node change does
            start = time.perf_counter()
            cache.authorized_entries(agent)
            times.append(time.perf_counter() - start)
        rows.append(
            (
                f"authorized entries p50/p99, {got} entries, {when}",
                f"{pct(times, 0.5) * 1e3:.3f}/{pct(times, 0.99) * 1e3:.3f} ms",
                "5 ms (goal, RPC p99)",
                f"{pct(times, 0.99) / 5e-3:.2f}x",
            )
        )
    agents = n // 10
    if changed:
        cache.version += 1
    else:
        for i in range(agents):
            cache.authorized_entries(agent_id(i))
    start = time.process_time()
    for i in range(agents):
        cache.authorized_entries(agent_id(i))
    share = (time.process_time() - start) / SYNC_INTERVAL_S
    rows.append(
        (
            f"CPU, {agents} agents syncing every 5 s, {when}",
            f"{share:.1%} of a core",
            "50% (goal)",
            f"{share / 0.5:.2f}x",
        )
    )
    return rows


def rss_row() -> Row:
    rss = rss_mib()
    return (
        "server-side RSS (this process)",
        f"{rss:.0f} MiB",
        "1 GiB (goal)",
        f"{rss / 1024:.2f}x",
    )


async def run(n: int, runs: int) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="pscale-") as tmp:
        config = SqlConfig(connection_string=str(Path(tmp) / "scale.sqlite3"))
        store = await open_datastore(config, clock=SystemClock())
        try:
            start = time.perf_counter()
            await populate(store, n)
            print(
                f"# populated {n} entries, {n // 10} agents in {time.perf_counter() - start:.0f} s",
                file=sys.stderr,
            )
            return [*await measure(store, n, runs), rss_row()]
        finally:
            await store.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = asyncio.run(run(max(args.entries, 1000), args.runs))
    width = max(len(r[0]) for r in rows)
    print(f"{'figure (sqlite3)':<{width}}  {'value':>16}  {'raw limit':>22}  ratio")
    for name, value, limit, ratio in rows:
        print(f"{name:<{width}}  {value:>16}  {limit:>22}  {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
