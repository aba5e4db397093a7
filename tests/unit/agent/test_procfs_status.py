"""Reading the ``Key:`` lines of /proc/<pid>/status (the ids the caller checks and the unix
attestor use)."""

from __future__ import annotations

import os

from plastron.agent import procfs

STATUS = (
    "Name:\tpython3\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t1001\t1002\t1003\n"
    "Gid:\t50\t51\t52\t53\nGroups:\t4 24 27 \nVmRSS:\t  1234 kB\n"
)


def test_the_asked_keys_are_split_on_whitespace() -> None:
    got = procfs.status_fields(STATUS, ("Uid", "Gid", "Groups"))
    assert got == {
        "Uid": ["1000", "1001", "1002", "1003"],
        "Gid": ["50", "51", "52", "53"],
        "Groups": ["4", "24", "27"],
    }


def test_a_missing_key_is_absent_and_the_first_and_last_lines_are_read() -> None:
    assert procfs.status_fields(STATUS, ("Seccomp",)) == {}
    assert procfs.status_fields("Uid:\t7\t8\nGid:\t9\t10", ("Uid", "Gid")) == {
        "Uid": ["7", "8"],
        "Gid": ["9", "10"],
    }
    assert procfs.status_fields("Groups:\t\n", ("Groups",)) == {"Groups": []}


def test_a_key_is_only_matched_at_the_start_of_a_line() -> None:
    assert procfs.status_fields("Name:\txUid:\t0\t0\nUid:\t5\t5\n", ("Uid",)) == {"Uid": ["5", "5"]}
    assert procfs.status_fields("NoUid:\t0\n", ("Uid",)) == {}


def test_a_process_name_cannot_forge_a_uid_line() -> None:
    # The kernel escapes newlines in Name, but not other line-breaking characters that
    # Python's str.splitlines() honours; those must not start a line.
    for brk in ("\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028"):
        forged = f"Name:\tx{brk}Uid:\t0\t0\t0\t0\nUid:\t1000\t1000\t1000\t1000\n"
        assert procfs.status_fields(forged, ("Uid",))["Uid"] == ["1000"] * 4, repr(brk)


def test_this_process_status_matches_its_ids() -> None:
    with open("/proc/self/status", encoding="utf-8") as f:
        got = procfs.status_fields(f.read(), ("Uid", "Gid"))
    assert [int(v) for v in got["Uid"][:2]] == [os.getuid(), os.geteuid()]
    assert [int(v) for v in got["Gid"][:2]] == [os.getgid(), os.getegid()]
