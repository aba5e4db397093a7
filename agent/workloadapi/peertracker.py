"""The Workload API caller is the process that connected, checked until it is answered.

``SO_PEERCRED`` names the process that called ``connect()``, but the workload attestors read
``/proc/<pid>`` later, at request time. In between, that PID may have exec'd a setuid program
(same PID, euid 0) while a forked child sends requests on the inherited connection, or exited
and been reused by another process. So, as SPIRE's peertracker does, at accept the agent keeps
a handle on the connecting process (an open ``/proc/<pid>`` directory, plus the kernel's pidfd
for it where ``SO_PEERPIDFD`` exists) and what it was then; after attestation, and before each
message of a stream, :meth:`CallerWatcher.check` confirms through that handle that it is the
same process with the same credentials, else the caller is refused.

What must still hold (``check``):

- the process has not exited (the pidfd does not report it; reading through the directory fd
  works, which it stops doing once the process is reaped; it is not a zombie);
- its start time (``/proc/<pid>/stat`` field 22) is the one seen at accept;
- its real and effective uid and gid are those seen at accept, and the effective ones equal
  the ``SO_PEERCRED`` uid/gid (which the kernel takes from the effective ids at connect);
- it is as dumpable as it was at accept: a setuid/setgid exec (or any change of its effective
  ids) makes a process non-dumpable, and it stays so when the program later drops back to the
  caller's ids, so a privileged program that ran in between, however briefly, is caught. The
  kernel shows it as root owning the process's private /proc files (``environ``); the
  world-readable ``/proc/<pid>`` directory itself is always owned by the effective ids.
"""

from __future__ import annotations

import logging
import os
import platform
import select
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plastron.agent import procfs
from plastron.errors import AttestationFailed, InvalidArgument
from plastron.transport.peer import PeerCredentials, socket_peer_credentials

log = logging.getLogger("plastron.agent.workloadapi")

# SO_PEERPIDFD (Linux 6.5): a pidfd for the very process that connected, so the process we
# open /proc for cannot be a later one reusing the PID. Python 3.11 has no constant; 77 is the
# asm-generic value, used only on architectures whose socket options are the generic ones.
_SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", None)
if _SO_PEERPIDFD is None and platform.machine() in ("x86_64", "aarch64", "riscv64"):
    _SO_PEERPIDFD = 77

_DEAD_STATES = ("Z", "X", "x")


class CallerChanged(AttestationFailed):
    """The process that connected is gone, or is no longer what it was when it connected."""


@dataclass(frozen=True)
class ProcessState:
    """What identifies a process for the life of a connection."""

    start_time: str
    real_uid: int
    effective_uid: int
    real_gid: int
    effective_gid: int
    private_owner: tuple[int, int]
    """uid, gid owning /proc/<pid>/environ: the effective ids, or root's when not dumpable."""


def _read_state(proc_fd: int, pid: int) -> ProcessState:
    """The state of the process behind ``proc_fd``; CallerChanged if it has exited."""
    try:
        stat_raw = procfs.read_at(proc_fd, "stat", procfs.MAX_STAT_BYTES)
        status = procfs.read_at(proc_fd, "status", procfs.MAX_STATUS_BYTES)
        owner = os.stat("environ", dir_fd=proc_fd, follow_symlinks=False)
    except OSError as exc:
        raise CallerChanged(f"process {pid} has exited ({exc.strerror})") from None
    try:
        fields = procfs.stat_fields(stat_raw)
        ids = procfs.status_fields(status.decode("utf-8", "replace"), ("Uid", "Gid"))
        uids, gids = [int(v) for v in ids["Uid"][:2]], [int(v) for v in ids["Gid"][:2]]
        if len(uids) != 2 or len(gids) != 2:
            raise procfs.MalformedProcFile("status Uid/Gid lines have fewer than 2 ids")
    except (procfs.MalformedProcFile, KeyError, ValueError) as exc:
        raise CallerChanged(f"/proc/{pid} is unreadable: {exc}") from None
    state = procfs.stat_state(fields)
    if state in _DEAD_STATES:
        raise CallerChanged(f"process {pid} has exited (state {state})")
    return ProcessState(
        start_time=procfs.stat_start_time(fields),
        real_uid=uids[0],
        effective_uid=uids[1],
        real_gid=gids[0],
        effective_gid=gids[1],
        private_owner=(owner.st_uid, owner.st_gid),
    )


def _changes(creds: PeerCredentials, then: ProcessState, now: ProcessState) -> list[str]:
    """What differs between the process at accept and now, in words; empty if nothing."""
    changed = []
    if now.start_time != then.start_time:
        changed.append(f"start time {now.start_time}, was {then.start_time} (PID reused)")
    for name in ("real_uid", "effective_uid", "real_gid", "effective_gid"):
        was, is_ = getattr(then, name), getattr(now, name)
        if is_ != was:
            changed.append(f"{name.replace('_', ' ')} {is_}, was {was}")
    if (now.effective_uid, now.effective_gid) != (creds.uid, creds.gid):
        changed.append(
            f"effective uid/gid {now.effective_uid}/{now.effective_gid}, "
            f"but it connected as {creds.uid}/{creds.gid}"
        )
    if now.private_owner != then.private_owner:
        (uid, gid), (was_uid, was_gid) = now.private_owner, then.private_owner
        changed.append(
            f"/proc/{creds.pid}/environ owner {uid}:{gid}, was {was_uid}:{was_gid} "
            "(no longer dumpable: a setuid/setgid exec?)"
        )
    return changed


def _pidfd_exited(pidfd: int) -> bool:
    """A pidfd polls readable once its process has exited."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


class CallerWatcher:
    """A handle on the process that connected, held for the life of its connection."""

    def __init__(
        self, creds: PeerCredentials, proc_fd: int, pidfd: int | None, state: ProcessState
    ) -> None:
        self.credentials = creds
        self._proc_fd: int | None = proc_fd
        self._pidfd = pidfd
        self._state = state

    @property
    def pid(self) -> int:
        return self.credentials.pid

    @classmethod
    def open(
        cls, creds: PeerCredentials, pidfd: int | None = None, proc_root: str = "/proc"
    ) -> CallerWatcher:
        """Watch the process ``creds`` names; takes ownership of ``pidfd`` (closed on error).

        AttestationFailed if it cannot be identified or is already not the one that connected.
        """
        try:
            return cls._open(creds, pidfd, Path(proc_root))
        except BaseException:
            if pidfd is not None:
                os.close(pidfd)
            raise

    @classmethod
    def _open(cls, creds: PeerCredentials, pidfd: int | None, proc_root: Path) -> CallerWatcher:
        if creds.pid <= 0:
            # 0: the peer lives in a PID namespace we cannot see.
            raise AttestationFailed(f"caller PID {creds.pid} is not visible to the agent")
        if pidfd is not None:
            _check_proc_shows_pid(proc_root, pidfd, creds.pid)
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        try:
            proc_fd = os.open(proc_root / str(creds.pid), flags)
        except OSError as exc:
            raise CallerChanged(f"process {creds.pid} has exited ({exc.strerror})") from None
        try:
            state = _read_state(proc_fd, creds.pid)
            watcher = cls(creds, proc_fd, pidfd, state)
            # Also refuses a process that changed between connect() and our open.
            watcher._verify(state)
        except BaseException:
            os.close(proc_fd)
            raise
        return watcher

    def check(self) -> None:
        """Raise CallerChanged (logged as a warning) unless the process is still the one that
        connected, with the credentials it connected with."""
        try:
            if self._proc_fd is None:
                raise CallerChanged(f"connection of process {self.pid} is closed")
            self._verify(_read_state(self._proc_fd, self.pid))
        except CallerChanged as exc:
            log.warning("workload API caller refused pid=%d reason=%s", self.pid, exc)
            raise

    def _verify(self, now: ProcessState) -> None:
        # The pidfd is checked after the /proc reads: alive now means the PID was not reused
        # while we read, so the directory fd is the connecting process's own.
        if self._pidfd is not None and _pidfd_exited(self._pidfd):
            raise CallerChanged(f"process {self.pid} has exited")
        changed = _changes(self.credentials, self._state, now)
        if changed:
            raise CallerChanged(
                f"process {self.pid} is not the caller that connected: {'; '.join(changed)}"
            )

    def close(self) -> None:
        for fd in (self._proc_fd, self._pidfd):
            if fd is not None:
                os.close(fd)
        self._proc_fd = self._pidfd = None


def _check_proc_shows_pid(proc_root: Path, pidfd: int, pid: int) -> None:
    """Refuse unless ``proc_root`` numbers the process ``pidfd`` holds as ``pid``.

    The kernel gives the caller's PID in the agent's PID namespace, but ``/proc/<pid>`` is
    looked up in the namespace of the procfs mounted there: an agent in a PID namespace of its
    own whose ``/proc`` is the host's (or another's) would read a different process under that
    number (PID 2 of a container is the host's ``kthreadd``, uid 0) and attest it. A pidfd's
    ``fdinfo`` gives the PID its process has in that procfs's namespace (Linux 5.3+).
    """
    try:
        text = (proc_root / "self" / "fdinfo" / str(pidfd)).read_text()
    except OSError as exc:
        raise AttestationFailed(f"cannot read process {pid}'s pidfd ({exc.strerror})") from None
    for line in text.splitlines():
        if line.startswith("Pid:"):
            shown = int(line.split()[1])
            if shown == -1:
                raise CallerChanged(f"process {pid} has exited")
            if shown != pid:
                raise AttestationFailed(
                    f"{proc_root} is not of the agent's PID namespace: the caller, process {pid}"
                    f" here, is {shown} there (mount a procfs of the agent's own PID namespace)"
                )
            return


def _peer_pidfd(sock: socket.socket) -> int | None:
    """The kernel's pidfd for the peer (SO_PEERPIDFD), or None where the kernel has none."""
    if _SO_PEERPIDFD is None:
        return None
    try:
        return sock.getsockopt(socket.SOL_SOCKET, _SO_PEERPIDFD)
    except OSError:  # ENOPROTOOPT before Linux 6.5
        return None


def watch_socket_peer(sock: Any, proc_root: str = "/proc") -> CallerWatcher:
    """A watcher for the process at the other end of the connected Unix socket ``sock``."""
    creds = socket_peer_credentials(sock)
    return CallerWatcher.open(creds, _peer_pidfd(sock), proc_root)


def watch_pid(pid: int, proc_root: str = "/proc") -> CallerWatcher:
    """A watcher for a process named only by its PID (the admin API's ``*ByPID`` calls).

    The pidfd is opened first, so a PID reused after that point is detected; the credentials
    held are those the process has now, and later checks refuse any change, as for a
    connected caller."""
    if pid <= 0:
        raise InvalidArgument(f"pid must be a positive process ID ({pid})")
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        raise AttestationFailed(f"process {pid} does not exist") from None
    except OSError:  # no pidfd_open (kernel before 5.3): the start time check still holds
        pidfd = None
    try:
        proc_fd = os.open(Path(proc_root) / str(pid), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        if pidfd is not None:
            os.close(pidfd)
        raise AttestationFailed(f"process {pid} is not visible ({exc.strerror})") from None
    try:
        state = _read_state(proc_fd, pid)
    except BaseException:
        if pidfd is not None:
            os.close(pidfd)
        raise
    finally:
        os.close(proc_fd)
    creds = PeerCredentials(pid=pid, uid=state.effective_uid, gid=state.effective_gid)
    watcher = CallerWatcher.open(creds, pidfd, proc_root)
    if _changes(creds, state, watcher._state):  # e.g. a setuid exec between the two reads
        watcher.close()
        raise CallerChanged(f"process {pid} changed while it was being identified")
    return watcher


class CallerTracker:
    """The watchers of one listening socket's connections, made at accept, closed with them.

    The endpoint calls ``connection_made``/``connection_lost`` from its protocol; the
    Workload API service finds a stream's watcher by the stream's transport.
    """

    def __init__(self, proc_root: str = "/proc") -> None:
        self._proc_root = proc_root
        self._callers: dict[Any, CallerWatcher | AttestationFailed] = {}

    def __len__(self) -> int:
        """Connections currently tracked (each holds its watcher's fds)."""
        return len(self._callers)

    def connection_made(self, transport: Any) -> None:
        sock = transport.get_extra_info("socket")
        caller: CallerWatcher | AttestationFailed
        try:
            if sock is None or sock.family != socket.AF_UNIX:
                raise AttestationFailed("caller is not on a Unix socket; cannot identify it")
            caller = watch_socket_peer(sock, self._proc_root)
        except (AttestationFailed, OSError) as exc:
            # Kept, not raised: the connection may still ask for health, which needs no
            # identity; every Workload API call on it is refused with this reason.
            reason = exc if isinstance(exc, AttestationFailed) else AttestationFailed(str(exc))
            log.warning("workload API caller unidentified at connect reason=%s", reason)
            caller = reason
        self._callers[transport] = caller

    def connection_lost(self, transport: Any) -> None:
        caller = self._callers.pop(transport, None)
        if isinstance(caller, CallerWatcher):
            caller.close()

    def watcher_for(self, transport: Any) -> CallerWatcher:
        """The watcher made when ``transport`` was accepted; AttestationFailed otherwise."""
        caller = self._callers.get(transport)
        if caller is None:
            raise AttestationFailed("caller was not identified when it connected")
        if isinstance(caller, AttestationFailed):
            raise AttestationFailed(f"caller was not identified when it connected: {caller}")
        return caller

    def close(self) -> None:
        for transport in list(self._callers):
            self.connection_lost(transport)
