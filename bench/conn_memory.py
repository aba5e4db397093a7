"""Server memory per connected agent (issue #18 item 1: server RSS ≤ 1 GiB at 10,000 agents).

A real ``plastron-server run`` (SQLite). Light agents (bench/push_clients.py) connect in steps
(``--steps 1000,10000``), spread over ``--clients`` client processes so neither side shares an
event loop or a file-descriptor limit: each is attested with a join token, holds its own mTLS
connection with an ``EntryNotifier/Watch`` stream open, and has made one GetAuthorizedEntries
call on it (the occasional sync). At each step the server's RSS (``/proc/<pid>/status``) and
its anonymous memory (``/proc/<pid>/smaps_rollup``) are read; per agent is the growth from
the server with no agent at all, divided by the agents connected.

With ``--entries N`` the datastore is first filled with bench/scale.py's fleet at N entries
(bench/scale_fleet.py; N/10 agents, ``--entries 100000`` for issue #18's 10,000 agents and
100,000 entries) before the server starts, and the light agents are that fleet's agents: agent
``i`` attests with join token ``node-<i>``, gets its node selectors, and its one
GetAuthorizedEntries returns its ~100 entries. The server with no agent then holds the whole
entry cache, so its RSS at the last step is the combined figure.

Raw limit, same run: a plain asyncio TLS server (``loop.create_server(ssl=...)``, a protocol
that does nothing) in its own process, and the same number of bare idle TLS connections to it
from one client process: its RSS growth per connection. Both servers raise RLIMIT_NOFILE to
the hard limit.

    .venv/bin/python bench/conn_memory.py [--steps 1000,10000] [--clients 4] [--entries 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conn_memory_raw import bare_connections, raw_server_process
from push_clients import LightAgent, ServerEndpoint, light_agents
from scale_fleet import agent_count, bulk_node_selectors, bulk_populate

from plastron.clock import SystemClock
from plastron.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from plastron.server.datastore.config import SqlConfig
from plastron.server.datastore.store import open_datastore

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests/integration/agent"), str(ROOT)]
from agent_processes import ServerProcess  # noqa: E402 - the test harness

SERVER_EXTRA = """
  ratelimit { attestation = false signing = false }
  grpc_limits { max_connections_per_peer = 20000 }
"""
GOAL_BYTES = 1 << 30


def raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def memory(pid: int) -> tuple[int, int]:
    """(RSS, anonymous) bytes of ``pid``."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                fields[name] = int(rest.split()[0]) * 1024
    return fields["Rss"], fields["Anonymous"]


async def entry_count(agent: LightAgent) -> int:
    stub = entry_grpc.EntryStub(agent.channel)
    request = entry_pb2.GetAuthorizedEntriesRequest()
    return len((await stub.GetAuthorizedEntries(request, timeout=60)).entries)


async def await_selectors(agent: LightAgent) -> None:
    """Until the server has applied this fleet agent's node selectors (at its next datastore
    poll after they were written; the others' were written before it, in the same order)."""
    deadline = time.monotonic() + 60
    while not await entry_count(agent):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{agent.spiffe_id}: no entries 60 s after its node selectors")
        await asyncio.sleep(0.5)


async def client_main(socket_path: str, port: int, first: int, count: int, fleet: bool) -> None:
    """One client process: ``count`` light agents (fleet agents ``first``.. if ``fleet``),
    then a sync each once stdin says so, then hold until stdin closes."""
    endpoint = ServerEndpoint(socket_path, port)
    tokens = [f"node-{i}" for i in range(first, first + count)] if fleet else None
    agents = await light_agents(endpoint, count, tokens=tokens)
    print("attested", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    if fleet:  # the probe's extra calls are the only ones beyond one per agent
        await await_selectors(agents[-1])
    for start in range(0, count, 100):
        counts = await asyncio.gather(*(entry_count(a) for a in agents[start : start + 100]))
        if fleet and not all(counts):
            raise RuntimeError("a fleet agent got no entries")
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    for agent in agents:
        agent.close()


def expect(clients: list[subprocess.Popen[str]], line: str) -> None:
    for client in clients:
        assert client.stdout is not None
        if client.stdout.readline().strip() != line:
            raise RuntimeError(f"a client process failed (exit {client.wait()})")


def start_clients(
    server: ServerProcess, first: int, count: int, processes: int, entries: int
) -> list[subprocess.Popen[str]]:
    """Agents ``first``..``first + count`` over ``processes`` client processes; a fleet's
    agents get their node selectors once attested (attestation by join token sets none)."""
    shares = [count // processes + (1 if i < count % processes else 0) for i in range(processes)]
    starts = [first + sum(shares[:i]) for i in range(processes)]
    fleet = "1" if entries else "0"
    args = [sys.executable, __file__, "--client", server.socket_path, str(server.port)]
    clients = [
        subprocess.Popen(
            [*args, str(at), str(n), fleet],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for at, n in zip(starts, shares, strict=True)
        if n
    ]
    expect(clients, "attested")
    if entries:
        seed_selectors(server, entries, range(first, first + count))
    for client in clients:
        assert client.stdin is not None
        client.stdin.write("sync\n")
        client.stdin.flush()
    expect(clients, "ready")
    return clients


def datastore_config(server: ServerProcess) -> SqlConfig:
    return SqlConfig(
        database_type="sqlite3", connection_string=f"{server.base}/server-data/ds.sqlite3"
    )


def seed_fleet(server: ServerProcess, entries: int) -> None:
    """The fleet's entries (no agent attested yet) in the datastore, before the server starts."""

    async def seed() -> float:
        (server.base / "server-data").mkdir(mode=0o700)
        store = await open_datastore(datastore_config(server), clock=SystemClock())
        try:
            return bulk_populate(store.engine, entries, leave_out_agents=agent_count(entries))
        finally:
            await store.close()

    took = asyncio.run(seed())
    print(f"  {entries:,} entries for {agent_count(entries):,} agents in {took:.0f} s", flush=True)


def seed_selectors(server: ServerProcess, entries: int, agents: range) -> None:
    async def seed() -> None:
        store = await open_datastore(datastore_config(server), clock=SystemClock())
        try:
            bulk_node_selectors(store.engine, entries, agents)
        finally:
            await store.close()

    asyncio.run(seed())


def settle(pid: int) -> tuple[int, int]:
    time.sleep(3)  # the last Watch streams' first pushes and the sync calls' garbage
    return memory(pid)


def plastron_rows(steps: list[int], processes: int, entries: int) -> list[tuple[int, int, int]]:
    """(agents, RSS, anonymous) at 0 and at each step."""
    work = Path(tempfile.mkdtemp(prefix="pconnmem-", dir="/tmp"))
    work.chmod(0o755)
    server = ServerProcess(work, server_extra=SERVER_EXTRA)
    if entries:
        seed_fleet(server, entries)
    server.start()
    clients: list[subprocess.Popen[str]] = []
    try:
        assert server.proc.process is not None
        pid = server.proc.process.pid
        rows = [(0, *settle(pid))]
        connected = 0
        for step in steps:
            started = time.perf_counter()
            clients += start_clients(server, connected, step - connected, processes, entries)
            connected = step
            took = time.perf_counter() - started
            rows.append((step, *settle(pid)))
            print(f"  {step} agents attested, watching and synced ({took:.0f} s)", flush=True)
        return rows
    finally:
        for client in clients:
            if client.stdin is not None:
                client.stdin.close()
            client.wait(60)
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def raw_rows(steps: list[int]) -> list[tuple[int, int]]:
    """(connections, RSS) of the plain asyncio TLS server at 0 and at each step."""
    server, port, cafile = raw_server_process()
    clients: list[subprocess.Popen[str]] = []
    try:
        rows = [(0, settle(server.pid)[0])]
        for step in steps:
            clients += bare_connections(port, cafile, step - (rows[-1][0]))
            rows.append((step, settle(server.pid)[0]))
        return rows
    finally:
        for client in clients:
            if client.stdin is not None:
                client.stdin.close()
            client.wait(60)
        server.kill()
        server.wait()


def mib(n: float) -> str:
    return f"{n / (1 << 20):.0f} MiB"


def kib(n: float) -> str:
    return f"{n / 1024:.0f} KiB"


def print_table(plastron: list[tuple[int, int, int]], raw: list[tuple[int, int]]) -> None:
    base_rss, base_anon = plastron[0][1], plastron[0][2]
    print(f"server with no agent: RSS {mib(base_rss)} (anonymous {mib(base_anon)})")
    header = ("agents", "server RSS", "per agent", "anon per agent", "10,000 agents (est.)")
    table = [(*header, "raw: bare TLS conn, per conn")]
    for (n, rss, anon), (_, raw_rss) in zip(plastron[1:], raw[1:], strict=True):
        per = (rss - base_rss) / n
        estimate = base_rss + per * 10_000
        verdict = "meets" if estimate <= GOAL_BYTES else "misses"
        row = (f"{n:,}", mib(rss), kib(per), kib((anon - base_anon) / n))
        table.append((*row, f"{mib(estimate)} ({verdict} 1 GiB)", kib((raw_rss - raw[0][1]) / n)))
    widths = [max(len(r[i]) for r in table) for i in range(len(header) + 1)]
    for r in table:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)))


def main() -> int:
    if len(sys.argv) == 7 and sys.argv[1] == "--client":
        raise_nofile()
        socket_path, port, first, count, fleet = sys.argv[2:]
        asyncio.run(client_main(socket_path, int(port), int(first), int(count), fleet == "1"))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default="1000,10000", help="agents connected at each step")
    ap.add_argument("--clients", type=int, default=4, help="client processes per step")
    ap.add_argument(
        "--entries", type=int, default=0, help="fill the datastore with scale.py's fleet first"
    )
    args = ap.parse_args()
    steps = sorted(int(s) for s in args.steps.split(","))
    if args.entries and (args.entries < 2000 or steps[-1] > agent_count(args.entries)):
        ap.error("--entries: at least 2000, and its N/10 agents must cover the last step")
    raise_nofile()
    print(f"RLIMIT_NOFILE {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}")
    raw = raw_rows(steps)
    plastron = plastron_rows(steps, args.clients, args.entries)
    print_table(plastron, raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
