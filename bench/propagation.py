"""Entry propagation: an entry created through the server API until a connected workload has
its SVID, with the server's push (``EntryNotifier/Watch``) and without it (the agent's poll).

A real ``plastron-server run`` (SQLite) and a real ``plastron-agent run`` (sync_interval 5 s,
SPIRE's default); this process is the workload, holding a FetchX509SVID stream on the agent's
socket, and also --agents light agents (bench/push_clients.py): each attested with a join token
and holding its own Watch stream on its own mTLS connection, so the server fans every change
out over --agents + 1 streams. They stand for the server's side of that many connected agents,
not for their sync traffic. Entries are created one at a time (a random 0.1-0.3 s apart, so
pushes are not coalesced) through the admin socket's BatchCreateEntry.

Figures, p50 / p99 over --runs entries: create → the workload's stream carries the new SVID
(push on); the same with ``entry_push = false`` (SPIRE's polling, --poll-runs entries); create
→ the push reaches a light agent the entry is for. Raw limit, same run: the create RPC's own
latency (it returns once the server's cache applied the entry).

    .venv/bin/python bench/propagation.py [--agents 1000] [--runs 50] [--poll-runs 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from conn_memory import memory
from grpclib.client import Channel
from push_clients import TD, LightAgent, ServerEndpoint, entry_message, light_agents, pct

from plastron.proto.workload import workload_pb2 as pb
from plastron.proto.workload.workload_grpc import SpiffeWorkloadAPIStub
from plastron.spiffe.ids import SpiffeId

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests/integration/agent"), str(ROOT)]
from agent_processes import AgentProcess, ServerProcess  # noqa: E402 - the test harness

HEADER = {"workload.spiffe.io": "true"}
SYNC_SECONDS = 5.0
NODE = SpiffeId(TD, "/node")
SERVER_EXTRA = """
  ratelimit { attestation = false signing = false }
  grpc_limits { max_connections_per_peer = 20000 }
"""


@dataclass
class Samples:
    visible: list[float]
    create: list[float]


async def _workload_sees(socket_path: str, spiffe_id: str, up: asyncio.Event) -> float:
    channel = Channel(path=socket_path)
    try:
        stub = SpiffeWorkloadAPIStub(channel)
        async with stub.FetchX509SVID.open(metadata=HEADER, timeout=120) as stream:
            await stream.send_message(pb.X509SVIDRequest(), end=True)
            while True:
                msg = await stream.recv_message()
                up.set()
                assert msg is not None
                if any(s.spiffe_id == spiffe_id for s in msg.svids):
                    seen = time.perf_counter()
                    await stream.cancel()
                    return seen
    finally:
        channel.close()


async def workload_runs(
    server: ServerEndpoint, agent: AgentProcess, runs: int, tag: str, spacing: float = 0.3
) -> Samples:
    """``spacing``: the most time between a run's start and its create (at least 0.1 s). The
    poll-only runs spread it over the whole sync interval: a fixed gap would lock every create
    to the same phase of the agent's poll (each run starts right after the last one's sync)."""
    samples = Samples([], [])
    admin = server.local()
    try:
        for i in range(runs):
            target = f"spiffe://{TD.name}/{tag}/{i}"
            up = asyncio.Event()
            watcher = asyncio.create_task(_workload_sees(agent.socket_path, target, up))
            await asyncio.wait_for(up.wait(), 60)
            await asyncio.sleep(random.uniform(0.1, spacing))
            started = time.perf_counter()
            await server.create_entry(admin, entry_message(f"/{tag}/{i}", NODE, agent.uid_selector))
            samples.create.append(time.perf_counter() - started)
            samples.visible.append(await asyncio.wait_for(watcher, 60) - started)
    finally:
        admin.close()
    return samples


async def light_runs(server: ServerEndpoint, agents: list[LightAgent], runs: int) -> Samples:
    samples = Samples([], [])
    admin = server.local()
    try:
        for i in range(runs):
            agent = random.choice(agents)
            agent.arrived.clear()
            await asyncio.sleep(random.uniform(0.1, 0.3))
            started = time.perf_counter()
            await server.create_entry(
                admin, entry_message(f"/light/{i}", agent.spiffe_id, "unix:uid:1")
            )
            samples.create.append(time.perf_counter() - started)
            await asyncio.wait_for(agent.arrived.wait(), 60)
            samples.visible.append(agent.pushes[-1] - started)
    finally:
        admin.close()
    return samples


def start_agent(work: Path, server: ServerProcess, experimental: str) -> AgentProcess:
    work.mkdir(mode=0o755)
    agent = AgentProcess(
        work, server, sync_interval=f"{SYNC_SECONDS:g}s", experimental_extra=experimental
    )
    agent.start(server.join_token(str(NODE)))
    return agent


async def measure(
    work: Path, server: ServerProcess, args: argparse.Namespace
) -> list[tuple[str, Samples]]:
    endpoint = ServerEndpoint(server.socket_path, server.port)
    assert server.proc.process is not None
    rss_before = memory(server.proc.process.pid)[0]
    started = time.perf_counter()
    agents = await light_agents(endpoint, args.agents)
    print(
        f"{len(agents)} light agents attested and watching in {time.perf_counter() - started:.1f}s"
    )
    await asyncio.sleep(2)
    per_agent = (memory(server.proc.process.pid)[0] - rss_before) / max(1, len(agents))
    print(
        f"server RSS per light agent (mTLS connection + Watch stream): {per_agent / 1024:.0f} KiB;"
        f" 10,000 agents: {(rss_before + per_agent * 10_000) / (1 << 20):.0f} MiB (goal 1 GiB;"
        " bench/conn_memory.py measures it, beside the raw TLS limit)"
    )
    results: list[tuple[str, Samples]] = []
    try:
        agent = start_agent(work / "push", server, "")
        try:
            results.append(("push", await workload_runs(endpoint, agent, args.runs, "push")))
        finally:
            agent.stop()
        results.append(("light", await light_runs(endpoint, agents, args.runs)))
        if args.poll_runs:
            agent = start_agent(work / "poll", server, "entry_push = false")
            try:
                results.append(
                    ("poll", await workload_runs(endpoint, agent, args.poll_runs, "poll", 5.1))
                )
            finally:
                agent.stop()
    finally:
        for agent_ in agents:
            agent_.close()
    return results


def ms(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def print_table(results: list[tuple[str, Samples]], agents: int) -> None:
    names = {
        "push": f"create -> workload SVID, push ({agents} + 1 streams)",
        "light": "create -> push at a light agent",
        "poll": "create -> workload SVID, poll only",
    }
    create = [c for _, s in results for c in s.create]
    raw = pct(create, 0.5)
    rows = [("figure", "p50", "p99", "raw limit (same run)", "p99 ratio")]
    for name, s in results:
        p50, p99 = pct(s.visible, 0.5), pct(s.visible, 0.99)
        limit, label = (SYNC_SECONDS, "sync interval 5 s") if name == "poll" else (raw, "")
        label = label or f"create RPC p50 {ms(raw)}"
        row = (f"{names[name]}, n={len(s.visible)}", ms(p50), ms(p99), label, f"{p99 / limit:.2f}x")
        rows.append(row)
    rows.append(("create RPC itself", ms(raw), ms(pct(create, 0.99)), "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=1000, help="light agents holding Watch streams")
    ap.add_argument("--runs", type=int, default=50, help="entries created per push figure")
    ap.add_argument("--poll-runs", type=int, default=10, help="entries for the poll-only figure")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pprop-", dir="/tmp"))
    work.chmod(0o755)
    server = ServerProcess(work, server_extra=SERVER_EXTRA)
    server.start()
    try:
        # The workload's first SVID: its stream has a first message before any run.
        server.create_entry(str(NODE), f"spiffe://{TD.name}/w0", f"unix:uid:{os.geteuid()}")
        results = asyncio.run(measure(work, server, args))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print_table(results, args.agents)
    return 0


if __name__ == "__main__":
    sys.exit(main())
