"""Workload API callers as real workloads connect: each on its own connection (imported by
bench/agent_workload_api.py, which runs the serving child).

Figures: 1,000 callers connecting at once (how many connect, first-message p50/p99); the
agent's CPU per new caller against a bare gRPC health call on a new connection, both read from
the serving process's own /proc/<pid>/stat in the same run; a new caller's first message with
1,000 streams held open; the time for an SVID rotation to reach all open streams.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from grpclib.client import Channel

from plastron.proto.grpc.health.v1 import health_pb2
from plastron.proto.grpc.health.v1.health_grpc import HealthStub
from plastron.proto.workload import workload_pb2 as pb
from plastron.proto.workload.workload_grpc import SpiffeWorkloadAPIStub

HEADER = {"workload.spiffe.io": "true"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (fields 14 and 15 of /proc/<pid>/stat)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Burst:
    """What a burst of callers, each on a new connection, saw."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    agent_cpu: float = 0.0


async def _svid_on_new_connection(path: str) -> float:
    channel = Channel(path=path)
    start = time.perf_counter()
    try:
        stub = SpiffeWorkloadAPIStub(channel)
        async with stub.FetchX509SVID.open(metadata=HEADER, timeout=60) as stream:
            await stream.send_message(pb.X509SVIDRequest(), end=True)
            msg = await stream.recv_message()
            elapsed = time.perf_counter() - start
            await stream.cancel()
        assert msg is not None and msg.svids
        return elapsed
    finally:
        channel.close()


async def _health_on_new_connection(path: str) -> float:
    channel = Channel(path=path)
    start = time.perf_counter()
    try:
        await HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=60)
        return time.perf_counter() - start
    finally:
        channel.close()


async def burst(path: str, agent_pid: int, callers: int, *, health: bool = False) -> Burst:
    """``callers`` connecting at once, each on its own connection, and the agent's CPU."""
    call = _health_on_new_connection if health else _svid_on_new_connection
    out = Burst()
    cpu_before = process_cpu_seconds(agent_pid)
    results = await asyncio.gather(*(call(path) for _ in range(callers)), return_exceptions=True)
    out.agent_cpu = process_cpu_seconds(agent_pid) - cpu_before
    for result in results:
        if isinstance(result, BaseException):
            out.failures.append(f"{type(result).__name__}: {result}")
        else:
            out.latencies.append(result)
    return out


@dataclass
class HeldStreams:
    """Streams kept open (each on its own connection), recording when each sees an update."""

    opened: int = 0
    failed: int = 0
    updates: list[float] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    channels: list[Channel] = field(default_factory=list)

    async def _hold(self, path: str, target: int) -> None:
        try:
            await self._hold_one(path, target)
        except Exception:
            self.failed += 1  # refused at connect: the listen backlog was full
            if self.opened + self.failed == target:
                self.ready.set()

    async def _hold_one(self, path: str, target: int) -> None:
        channel = Channel(path=path)
        self.channels.append(channel)
        stub = SpiffeWorkloadAPIStub(channel)
        async with stub.FetchX509SVID.open(metadata=HEADER, timeout=600) as stream:
            await stream.send_message(pb.X509SVIDRequest(), end=True)
            await stream.recv_message()
            self.opened += 1
            if self.opened + self.failed == target:
                self.ready.set()
            await stream.recv_message()  # the next one: a rotation
            self.updates.append(time.perf_counter())
            await stream.cancel()

    async def open(self, path: str, count: int) -> None:
        self.tasks = [asyncio.create_task(self._hold(path, count)) for _ in range(count)]
        await asyncio.wait_for(self.ready.wait(), 120)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for channel in self.channels:
            channel.close()


@dataclass
class HeldSweep:
    """New callers' first messages with more and more streams held open, then a rotation."""

    new_caller_latencies: dict[int, list[float]] = field(default_factory=dict)
    """By the number of streams asked to be held open while they were timed."""
    opened: dict[int, int] = field(default_factory=dict)
    """By the same number: how many were open (the others were refused)."""
    rotation_reach: float = 0.0
    """Seconds from asking the agent to rotate until the last open stream had the new SVID."""
    reached: int = 0
    agent_rss_kib: int = 0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


async def _rotation_reach(groups: list[HeldStreams], agent_pid: int, out: HeldSweep) -> None:
    opened = sum(g.opened for g in groups)
    asked = time.perf_counter()
    os.kill(agent_pid, signal.SIGUSR1)
    deadline = asked + 30
    while sum(len(g.updates) for g in groups) < opened and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    updates = [u for g in groups for u in g.updates]
    out.rotation_reach = max(updates) - asked if updates else float("inf")
    out.reached = len(updates)


async def held_sweep(path: str, agent_pid: int, counts: list[int], new_callers: int) -> HeldSweep:
    """For each of ``counts`` (ascending): hold that many streams open (opening only the ones
    more than before, none closed in between, as on a node whose workloads stay), then time
    ``new_callers`` new callers one after another. Then rotate (SIGUSR1 to the serving child)
    and time the update's arrival on every held stream."""
    out = HeldSweep()
    groups: list[HeldStreams] = []
    try:
        for count in sorted(counts):
            held = sum(g.opened + g.failed for g in groups)
            if count > held:
                groups.append(HeldStreams())
                await groups[-1].open(path, count - held)
            out.opened[count] = sum(g.opened for g in groups)
            out.new_caller_latencies[count] = [
                await _svid_on_new_connection(path) for _ in range(new_callers)
            ]
        out.agent_rss_kib = rss_kib(agent_pid)
        if groups:
            await _rotation_reach(groups, agent_pid, out)
        return out
    finally:
        for group in groups:
            await group.close()
