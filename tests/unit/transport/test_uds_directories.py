"""The socket's directory: created private, never changed when it exists, refused when another
user could swap the socket (issue #12 item 4)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from plastron.agent.workloadapi.endpoint import start_endpoint
from plastron.agent.workloadapi.peertracker import CallerTracker
from plastron.errors import FailedPrecondition
from plastron.transport.server import start_server
from tests.unit.transport.test_transport_uds import TinyWorkloadApi

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown to another uid")


def _mode(path: Path | str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def shared_dir(tmp_path: Path) -> Iterator[Path]:
    """A /tmp-like directory: world-writable and sticky."""
    path = tmp_path / "shared-tmp"
    path.mkdir()
    path.chmod(0o1777)
    yield path


async def test_sticky_shared_directory_is_left_as_it_is(shared_dir: Path) -> None:
    """socket_path = "/tmp/api.sock": the socket is made there; /tmp keeps 1777."""
    sock = shared_dir / "api.sock"
    async with await start_server([TinyWorkloadApi()], uds_path=str(sock)):
        assert _mode(shared_dir) == 0o1777
        assert stat.S_ISSOCK(os.lstat(sock).st_mode) and _mode(sock) == 0o600
        assert os.lstat(sock).st_uid == os.geteuid()
    assert _mode(shared_dir) == 0o1777


async def test_world_writable_directory_without_sticky_bit_is_refused(tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(FailedPrecondition) as info:
        await start_server([TinyWorkloadApi()], uds_path=str(open_dir / "api.sock"))
    message = str(info.value)
    assert "\n" not in message
    assert str(open_dir) in message and "writable by others" in message and "0777" in message
    assert _mode(open_dir) == 0o777  # refused, not "fixed"
    assert os.listdir(open_dir) == []


async def test_group_writable_directory_above_the_socket_is_refused(tmp_path: Path) -> None:
    above = tmp_path / "above"
    (above / "private").mkdir(parents=True)
    above.chmod(0o775)
    with pytest.raises(FailedPrecondition, match=r"directory above the socket .*above"):
        await start_server([TinyWorkloadApi()], uds_path=str(above / "private" / "api.sock"))
    assert _mode(above) == 0o775


async def test_missing_directories_are_created_with_the_directory_mode(tmp_path: Path) -> None:
    sock = tmp_path / "a" / "b" / "api.sock"
    old_umask = os.umask(0)  # mkdir alone would give 0777 here
    try:
        async with await start_server([TinyWorkloadApi()], uds_path=str(sock)):
            assert _mode(tmp_path / "a") == 0o700
            assert _mode(tmp_path / "a" / "b") == 0o700
            assert _mode(sock) == 0o600
    finally:
        os.umask(old_umask)


async def test_an_existing_private_directory_keeps_its_mode(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    mine.chmod(0o750)
    async with await start_server([TinyWorkloadApi()], uds_path=str(mine / "api.sock")):
        assert _mode(mine) == 0o750


@needs_root
async def test_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    with pytest.raises(FailedPrecondition, match="belongs to uid 65534"):
        await start_server([TinyWorkloadApi()], uds_path=str(theirs / "api.sock"))


async def test_symlinked_directory_is_judged_by_its_target(tmp_path: Path) -> None:
    target = tmp_path / "open-target"
    target.mkdir()
    target.chmod(0o777)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(FailedPrecondition, match="open-target"):
        await start_server([TinyWorkloadApi()], uds_path=str(link / "api.sock"))


async def test_agent_socket_follows_the_same_rules(tmp_path: Path, shared_dir: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(FailedPrecondition, match="writable by others"):
        await start_endpoint(str(open_dir / "api.sock"), [TinyWorkloadApi()], CallerTracker())
    for sock, created in (
        (shared_dir / "agent.sock", False),
        (tmp_path / "fresh" / "public" / "api.sock", True),
    ):
        server = await start_endpoint(str(sock), [TinyWorkloadApi()], CallerTracker())
        try:
            assert _mode(sock) == 0o777
            if created:
                assert _mode(sock.parent) == 0o755 and _mode(sock.parent.parent) == 0o755
            else:
                assert _mode(shared_dir) == 0o1777
        finally:
            await server.close()
