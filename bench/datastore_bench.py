"""Datastore figures: entry create rate and list_all_entries time, per database.

Prints one table: each figure, the raw limit measured in the same run (a datastore round
trip of `SELECT 1`, or the bare SELECTs that list_all_entries issues), and the ratio.
Medians of --runs repetitions. Creates and drops its own databases.

    .venv/bin/python bench/datastore_bench.py [--entries 10000] [--backends sqlite3,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import create_engine, select, text

from plastron.clock import SystemClock
from plastron.records import RegistrationEntry
from plastron.selector import Selector
from plastron.server.datastore.config import SqlConfig
from plastron.server.datastore.engine import build_engine
from plastron.server.datastore.schema import dns_names, registered_entries, selectors
from plastron.server.datastore.store import SqlDataStore, open_datastore
from plastron.spiffe.ids import SpiffeId, TrustDomain

TD = TrustDomain("bench.example")
ADMIN = {
    "postgres": "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/",
}


def make_entry(i: int) -> RegistrationEntry:
    return RegistrationEntry(
        entry_id="",
        spiffe_id=SpiffeId(TD, f"/workload/{i}"),
        parent_id=SpiffeId(TD, f"/spire/agent/join_token/node-{i % 100}"),
        selectors=(Selector("unix", f"uid:{i}"), Selector("unix", "gid:1000")),
        dns_names=(f"w{i}.bench.example",),
    )


def new_database(kind: str, tmp: Path) -> tuple[SqlConfig, Callable[[], None]]:
    name = f"plastron_bench_{uuid.uuid4().hex[:10]}"
    if kind == "sqlite3":
        return SqlConfig(connection_string=str(tmp / f"{name}.sqlite3")), lambda: None
    admin = create_engine(ADMIN[kind], isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    cs = (
        f"dbname={name} user=postgres host=127.0.0.1"
        if kind == "postgres"
        else f"root:@tcp(127.0.0.1:3306)/{name}"
    )

    def drop() -> None:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if kind == "postgres" else ""
            conn.execute(text(f"DROP DATABASE {name}{force}"))
        admin.dispose()

    return SqlConfig(database_type=kind, connection_string=cs), drop  # type: ignore[arg-type]


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def round_trips_per_s(ds: SqlDataStore, n: int = 500) -> float:
    async def loop() -> None:
        for _ in range(n):
            await ds.health_check()

    return n / await timed(loop)


def bare_select_all(config: SqlConfig) -> float:
    """The SELECTs list_all_entries issues, rows fetched but no records built."""
    eng = build_engine(config)
    start = time.perf_counter()
    with eng.connect() as conn:
        for table in (selectors, dns_names, registered_entries):
            conn.execute(select(table)).fetchall()
    elapsed = time.perf_counter() - start
    eng.dispose()
    return elapsed


async def bench_backend(kind: str, n: int, runs: int, tmp: Path) -> list[tuple[str, str, str, str]]:
    config, drop = new_database(kind, tmp)
    rows: list[tuple[str, str, str, str]] = []
    try:
        ds = await open_datastore(config, clock=SystemClock())
        rtt = statistics.median([await round_trips_per_s(ds) for _ in range(runs)])
        single_n = min(2000, n // 2)  # the rest goes through create_entries
        t_single = await timed(lambda: _create_one_by_one(ds, 0, single_n))
        t_batch = await timed(lambda: _create_batched(ds, single_n, n))
        listed = [await timed(ds.list_all_entries) for _ in range(runs)]
        assert len(await ds.list_all_entries()) == n
        raw = statistics.median([bare_select_all(config) for _ in range(runs)])
        await ds.close()
    finally:
        drop()
    one_rate, batch_rate = single_n / t_single, (n - single_n) / t_batch
    rows.append((f"{kind}: create_entry, sequential ({single_n})", f"{one_rate:,.0f}/s",
                 f"{rtt:,.0f} SELECT 1/s", f"{one_rate / rtt:.2f}"))  # fmt: skip
    rows.append((f"{kind}: create_entries, 500/batch ({n - single_n})", f"{batch_rate:,.0f}/s",
                 f"{rtt:,.0f} SELECT 1/s", f"{batch_rate / rtt:.2f}"))  # fmt: skip
    med = statistics.median(listed)
    rows.append((f"{kind}: list_all_entries ({n})", f"{med * 1000:,.0f} ms",
                 f"{raw * 1000:,.0f} ms bare SELECTs", f"{med / raw:.1f}x"))  # fmt: skip
    return rows


async def _create_one_by_one(ds: SqlDataStore, start: int, stop: int) -> None:
    for i in range(start, stop):
        await ds.create_entry(make_entry(i))


async def _create_batched(ds: SqlDataStore, start: int, stop: int) -> None:
    for lo in range(start, stop, 500):
        results = await ds.create_entries([make_entry(i) for i in range(lo, min(lo + 500, stop))])
        assert all(isinstance(r, RegistrationEntry) for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--backends", default="sqlite3,postgres")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    table: list[tuple[str, str, str, str]] = [("figure", "value", "raw limit (same run)", "ratio")]
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.backends.split(","):
            table += asyncio.run(bench_backend(kind, args.entries, args.runs, Path(tmp)))
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
