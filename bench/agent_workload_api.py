"""Agent figures: Workload API FetchX509SVID first-message latency from the agent cache (1, 100,
1,000 concurrent streams multiplexed 100 per connection; then --callers callers each on its own
connection, all at once, as workloads connect after a node reboot), the agent's CPU per new
caller, a new caller's first message and a rotation's reach with --callers streams held open,
agent RSS with 1,000 and --svids cached SVIDs, and the time for an entry created on the server
to reach a connected workload (real server + agent processes).

Prints one table: each figure, the raw limit measured in the same run (a bare gRPC health
round trip on the same socket; the agent's CPU for a bare health call on a new connection,
read from its /proc/<pid>/stat; the RSS of the same process with one SVID; the agent's sync
interval, which bounds it without the server's entry push; bench/propagation.py has the
push's figures in full) and the ratio. Medians of --runs repetitions.

    .venv/bin/python bench/agent_workload_api.py [--runs 3] [--skip-e2e] [--callers 1000]
        [--svids 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel
from workload_callers import Burst, HeldSweep, burst, held_sweep

from plastron.agent.cache import WorkloadCache, WorkloadEntry
from plastron.agent.workloadapi.endpoint import AgentHealth, start_endpoint
from plastron.agent.workloadapi.service import WorkloadAPIService
from plastron.agent.workloadattestor.unix import UnixWorkloadAttestor
from plastron.clock import SystemClock
from plastron.gcpause import LongLivedFreezer
from plastron.proto.grpc.health.v1 import health_pb2
from plastron.proto.grpc.health.v1.health_grpc import HealthStub
from plastron.proto.workload import workload_pb2 as pb
from plastron.proto.workload.workload_grpc import SpiffeWorkloadAPIStub
from plastron.selector import Selector
from plastron.spiffe.bundle import Bundle, X509Authority
from plastron.spiffe.ids import TrustDomain
from plastron.spiffe.x509svid import X509Svid, make_ca_certificate, make_x509_svid
from plastron.transport.limits import ConnectionLimits

TD = TrustDomain("bench.example")
HEADER = {"workload.spiffe.io": "true"}
NEW_CALLERS = 200  # one after another, each on a new connection, per held-stream count


# ---- the serving side (runs in a child process so client and server do not share a loop) ----


def _fill(cache: WorkloadCache, svids: int) -> Callable[[], None]:
    """Fill the cache; returns a function that rotates our own entry's SVID (a new key)."""
    now = SystemClock().now()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = make_ca_certificate(
        trust_domain=TD,
        public_key=ca_key.public_key(),
        issuer=None,
        issuer_key=ca_key,
        not_before=now - dt.timedelta(minutes=1),
        not_after=now + dt.timedelta(days=1),
    )
    cache.set_bundle(Bundle(TD, (X509Authority(ca),)))
    entries, minted = [], {}
    for i in range(svids):
        # Entry 0 is ours (this uid); the others belong to other uids, as on a busy node.
        uid = os.geteuid() if i == 0 else 100000 + i
        entry = WorkloadEntry(
            f"e{i}", TD.spiffe_id(f"/w/{i}"), frozenset({Selector("unix", f"uid:{uid}")})
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = make_x509_svid(
            spiffe_id=entry.spiffe_id,
            public_key=key.public_key(),
            issuer=ca,
            issuer_key=ca_key,
            not_before=now,
            not_after=now + dt.timedelta(hours=1),
        )
        entries.append(entry)
        minted[entry.entry_id] = X509Svid(entry.spiffe_id, (cert,), key)
    cache.set_entries(entries)
    cache.set_x509_svids(minted)

    def rotate() -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = make_x509_svid(
            spiffe_id=entries[0].spiffe_id,
            public_key=key.public_key(),
            issuer=ca,
            issuer_key=ca_key,
            not_before=SystemClock().now(),
            not_after=SystemClock().now() + dt.timedelta(hours=1),
        )
        cache.set_x509_svids({"e0": X509Svid(entries[0].spiffe_id, (cert,), key)})

    return rotate


class CollectorPauses:
    """The serving child's full collections: how many, and the longest (a loop pause)."""

    def __init__(self) -> None:
        self.full = 0
        self.longest = 0.0
        self._started = 0.0

    def on_collection(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif info["generation"] == 2:
            self.full += 1
            self.longest = max(self.longest, time.perf_counter() - self._started)

    def __str__(self) -> str:
        return f"{self.full} full collections, longest {self.longest * 1e3:.0f} ms"


async def _thaw_when_due(freezer: LongLivedFreezer) -> None:
    while True:  # the agent checks after each sync (every 5 s by default)
        await asyncio.sleep(5)
        freezer.thaw_if_due()


async def serve(socket_path: str, svids: int, freeze: bool) -> None:
    clock = SystemClock()
    cache = WorkloadCache(TD, clock, max_x509_svids=max(svids, 1))
    rotate = _fill(cache, svids)
    freezer = LongLivedFreezer()
    if freeze:  # as the agent does from its first sync on (plastron.gcpause)
        freezer.settle()
        freezer.install()
        thawing = asyncio.create_task(_thaw_when_due(freezer))
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, rotate)
    service = WorkloadAPIService(cache, [UnixWorkloadAttestor()], clock)
    # Every bench caller is this uid; real workloads are spread over many, each under the cap.
    per_uid = ConnectionLimits(max_connections_per_peer=100_000)
    server = await start_endpoint(
        socket_path, [service, AgentHealth()], service.callers, connections=per_uid
    )
    pauses = CollectorPauses()
    gc.callbacks.append(pauses.on_collection)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    gc.callbacks.remove(pauses.on_collection)
    print(f"gc {pauses.full} {pauses.longest} {freezer.thaws}", flush=True)
    await server.close()
    if freeze:
        thawing.cancel()


# ---- the client side -------------------------------------------------------------------------


async def _first_message(channel: Channel) -> float:
    stub = SpiffeWorkloadAPIStub(channel)
    start = time.perf_counter()
    async with stub.FetchX509SVID.open(metadata=HEADER, timeout=60) as stream:
        await stream.send_message(pb.X509SVIDRequest(), end=True)
        msg = await stream.recv_message()
        elapsed = time.perf_counter() - start
        await stream.cancel()
    assert msg is not None and msg.svids
    return elapsed


async def stream_latencies(socket_path: str, streams: int) -> list[float]:
    # One connection per 100 streams: like many workloads, each with its own connection.
    channels = [Channel(path=socket_path) for _ in range(max(1, streams // 100))]
    try:
        for ch in channels:  # connect (and warm up) before timing
            await _first_message(ch)
        return list(
            await asyncio.gather(
                *(_first_message(channels[i % len(channels)]) for i in range(streams))
            )
        )
    finally:
        for ch in channels:
            ch.close()


async def health_latencies(socket_path: str, count: int) -> list[float]:
    channel = Channel(path=socket_path)
    stub = HealthStub(channel)
    try:
        await stub.Check(health_pb2.HealthCheckRequest())
        out = []
        for _ in range(count):
            start = time.perf_counter()
            await stub.Check(health_pb2.HealthCheckRequest())
            out.append(time.perf_counter() - start)
        return out
    finally:
        channel.close()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class ServingChild:
    def __init__(self, work: Path, svids: int, freeze: bool = True) -> None:
        self.socket_path = str(work / f"api-{svids}.sock")
        mode = "freeze" if freeze else "no-freeze"
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", self.socket_path, str(svids), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError("serving child did not start")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def close(self) -> tuple[int, float, int]:
        """Stop the child; its full collections, the longest (seconds) and its thaws."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        report = self.proc.stdout.readline().split()
        self.proc.wait(timeout=30)
        if len(report) != 4 or report[0] != b"gc":
            raise RuntimeError("serving child did not report its collections")
        return int(report[1]), float(report[2]), int(report[3])


async def _watch_until(socket_path: str, spiffe_id: str, started: asyncio.Event) -> float:
    channel = Channel(path=socket_path)
    try:
        stub = SpiffeWorkloadAPIStub(channel)
        async with stub.FetchX509SVID.open(metadata=HEADER, timeout=120) as stream:
            await stream.send_message(pb.X509SVIDRequest(), end=True)
            while True:
                msg = await stream.recv_message()
                started.set()
                assert msg is not None
                if any(s.spiffe_id == spiffe_id for s in msg.svids):
                    seen = time.perf_counter()
                    await stream.cancel()  # else leaving the block waits for the stream's end
                    return seen
    finally:
        channel.close()


async def propagation_once(server: object, agent: object, n: int) -> float:
    td = "example.org"
    target = f"spiffe://{td}/bench/{n}"
    started = asyncio.Event()
    watcher = asyncio.create_task(_watch_until(agent.socket_path, target, started))  # type: ignore[attr-defined]
    await asyncio.wait_for(started.wait(), 60)
    await asyncio.to_thread(
        server.create_entry,  # type: ignore[attr-defined]
        f"spiffe://{td}/node",
        target,
        agent.uid_selector,  # type: ignore[attr-defined]
    )
    created = time.perf_counter()
    return await asyncio.wait_for(watcher, 60) - created


def entry_propagation(runs: int) -> list[float]:
    root = Path(__file__).resolve().parents[1]
    # the harness imports tests.processes, so the repository root goes on the path too
    sys.path[:0] = [str(root / "tests/integration/agent"), str(root)]
    from agent_processes import AgentProcess, ServerProcess  # noqa: PLC0415 - test harness

    work = Path(tempfile.mkdtemp(prefix="pab-", dir="/tmp"))
    work.chmod(0o755)
    server = ServerProcess(work)
    server.start()
    agent = AgentProcess(work, server, sync_interval="5s")
    try:
        server.create_entry(
            "spiffe://example.org/node", "spiffe://example.org/w0", agent.uid_selector
        )
        agent.start(server.join_token("spiffe://example.org/node"))
        return [asyncio.run(propagation_once(server, agent, i)) for i in range(runs)]
    finally:
        agent.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


Row = tuple[str, str, str, str]


def _median_burst(path: str, pid: int, callers: int, runs: int, health: bool) -> list[Burst]:
    out = []
    for _ in range(runs):
        out.append(asyncio.run(burst(path, pid, callers, health=health)))
        time.sleep(0.5)  # let the agent see the last burst's connections close
    return out


def per_connection_rows(work: Path, runs: int, callers: int, raw: float, freeze: bool) -> list[Row]:
    """Each caller on its own connection: a burst of ``callers``; agent CPU per caller."""
    child = ServingChild(work, 1, freeze)
    try:
        svid = _median_burst(child.socket_path, child.proc.pid, callers, runs, False)
        bare = _median_burst(child.socket_path, child.proc.pid, callers, runs, True)
    finally:
        _, pause, thaws = child.close()
    connected = statistics.median(len(b.latencies) for b in svid)
    p50 = statistics.median(pct(b.latencies, 0.5) for b in svid if b.latencies)
    p99 = statistics.median(pct(b.latencies, 0.99) for b in svid if b.latencies)
    # per caller served (a refused connect costs the agent nothing)
    cpu = statistics.median(b.agent_cpu / max(1, len(b.latencies)) for b in svid)
    bare_cpu = statistics.median(b.agent_cpu / max(1, len(b.latencies)) for b in bare)
    failures = sorted({f for b in svid for f in b.failures})[:2]
    for failure in failures:
        print(f"# a caller failed: {failure}", file=sys.stderr)
    n = f"{callers} callers at once, own conn"
    return [
        (
            f"connected, {n}",
            f"{connected:.0f}/{callers}",
            f"{callers}",
            f"{connected / callers:.2f}",
        ),
        (f"1st msg p50, {n}", f"{p50 * 1e3:.1f} ms", f"{raw * 1e3:.2f} ms", f"{p50 / raw:.0f}x"),
        (f"1st msg p99, {n}", f"{p99 * 1e3:.1f} ms", f"{raw * 1e3:.2f} ms", f"{p99 / raw:.0f}x"),
        (
            "agent CPU per new caller (FetchX509SVID)",
            f"{cpu * 1e3:.2f} ms",
            f"{bare_cpu * 1e3:.2f} ms (health, new conn)",
            f"{cpu / bare_cpu:.2f}x" if bare_cpu else "n/a",
        ),
        (f"longest full collection (thaws), {n}", f"{pause * 1e3:.0f} ms ({thaws})", "", ""),
    ]


def _new_caller_rows(sweeps: list[HeldSweep], raw: float) -> list[Row]:
    rows = []
    for count in sweeps[0].new_caller_latencies:
        lats = [s.new_caller_latencies[count] for s in sweeps]
        opened = min(s.opened[count] for s in sweeps)
        p50 = statistics.median(pct(lat, 0.5) for lat in lats)
        p99 = statistics.median(pct(lat, 0.99) for lat in lats)
        worst = max(max(lat) for lat in lats)
        rows.append(
            (
                f"new caller 1st msg p50/p99/max, {opened}/{count} streams open",
                f"{p50 * 1e3:.1f} / {p99 * 1e3:.1f} / {worst * 1e3:.0f} ms",
                f"{raw * 1e3:.2f} ms",
                f"{p99 / raw:.1f}x",
            )
        )
    return rows


def held_streams_rows(
    work: Path, runs: int, streams: int, svids: int, raw: float, freeze: bool
) -> list[Row]:
    """0, 100 and ``streams`` held open on an agent caching ``svids`` (a new agent per run):
    new callers' first message (the 0 row is the raw limit of the others), rotation, RSS."""
    counts = sorted({0, min(100, streams), streams})
    sweeps, longest, thaws = [], [], []
    for _ in range(runs):
        child = ServingChild(work, svids, freeze)
        try:
            sweeps.append(
                asyncio.run(held_sweep(child.socket_path, child.proc.pid, counts, NEW_CALLERS))
            )
        finally:
            _, pause, thawed = child.close()
        longest.append(pause)
        thaws.append(thawed)
    reach = statistics.median(s.rotation_reach for s in sweeps)
    reached = min(s.reached for s in sweeps)
    opened = min(s.opened[streams] for s in sweeps)
    rss = statistics.median(s.agent_rss_kib for s in sweeps)
    return [
        *_new_caller_rows(sweeps, raw),
        (
            f"rotation reaches {reached}/{opened} open streams",
            f"{reach * 1e3:.0f} ms",
            "1 s (goal)",
            f"{reach:.2f}x",
        ),
        (
            f"longest full collection (thaws), {streams} streams + {svids} SVIDs",
            f"{max(longest) * 1e3:.0f} ms ({max(thaws)})",
            "",
            "",
        ),
        (
            f"agent RSS, {streams} streams + {svids} SVIDs",
            f"{rss / 1024:.1f} MiB",
            "",
            "",
        ),
    ]


def multiplexed_rows(socket_path: str, runs: int, raw: float) -> list[Row]:
    """1, 100 and 1,000 streams multiplexed 100 per connection: first message p50/p99."""
    rows = []
    for streams in (1, 100, 1000):
        p50s, p99s = [], []
        for _ in range(runs):
            lat = asyncio.run(stream_latencies(socket_path, streams))
            p50s.append(pct(lat, 0.5))
            p99s.append(pct(lat, 0.99))
        for name, value in (("p50", statistics.median(p50s)), ("p99", statistics.median(p99s))):
            rows.append(
                (
                    f"FetchX509SVID 1st msg {name}, {streams} streams",
                    f"{value * 1e3:.2f} ms",
                    f"{raw * 1e3:.2f} ms",
                    f"{value / raw:.1f}x",
                )
            )
    return rows


def rss_rows(work: Path, freeze: bool) -> list[Row]:
    fresh = ServingChild(work, 1, freeze)  # baseline before any client load
    base_rss = fresh.rss_kib()
    fresh.close()
    big = ServingChild(work, 1000, freeze)
    rss = big.rss_kib()
    big.close()
    return [
        (
            "agent RSS, 1000 cached SVIDs",
            f"{rss / 1024:.1f} MiB",
            f"{base_rss / 1024:.1f} MiB (1 SVID)",
            f"{rss / base_rss:.2f}x",
        )
    ]


def propagation_rows(runs: int) -> list[Row]:
    med = statistics.median(entry_propagation(runs))
    return [
        (
            "entry created -> workload stream (push)",
            f"{med:.2f} s",
            "5 s (sync interval: no push)",
            f"{med / 5:.2f}x",
        )
    ]


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--callers", type=int, default=1000, help="callers, own connection each")
    parser.add_argument("--svids", type=int, default=10_000, help="SVIDs cached, held streams")
    parser.add_argument(
        "--no-freeze",
        action="store_true",
        help="serve without the agent's gc freezing of long-lived objects (the 'before')",
    )
    parser.add_argument(
        "--held-only", action="store_true", help="only the held-streams figures (and raw limit)"
    )
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> int:
    args = _arguments()
    if args.serve:
        asyncio.run(serve(args.serve[0], int(args.serve[1]), args.serve[2] == "freeze"))
        return 0
    work = Path(tempfile.mkdtemp(prefix="pab-", dir="/tmp"))
    rows: list[Row] = []
    freeze = not args.no_freeze
    try:
        child = ServingChild(work, 1, freeze)
        raw = statistics.median(
            pct(asyncio.run(health_latencies(child.socket_path, 200)), 0.5)
            for _ in range(args.runs)
        )
        rows.append(("health round trip p50 (raw limit)", f"{raw * 1e3:.2f} ms", "", ""))
        if not args.held_only:
            rows += multiplexed_rows(child.socket_path, args.runs, raw)
        child.close()
        if not args.held_only:
            rows += per_connection_rows(work, args.runs, args.callers, raw, freeze)
        rows += held_streams_rows(work, args.runs, args.callers, args.svids, raw, freeze)
        if not args.held_only:
            rows += rss_rows(work, freeze)
        if not (args.skip_e2e or args.held_only):
            rows += propagation_rows(args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    print(f"{'figure':<{width}}  {'value':>16}  {'raw limit':>24}  {'ratio':>7}")
    for name, value, limit, ratio in rows:
        print(f"{name:<{width}}  {value:>16}  {limit:>24}  {ratio:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
