"""Flag parsing and request building of plastron-server verbs (no server needed)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from plastron.server.cli import agent, entry_input
from plastron.server.cli.args import (
    MAX_INPUT_BYTES,
    CliError,
    duration_flag_seconds,
    flag,
    int32_value,
    new_parser,
    read_input,
    repeated_flag,
)
from plastron.server.cli.entry import _entry_flags
from plastron.server.cli.main import main, resolve


def _entry_ns(argv: list[str], *, create: bool = True) -> Any:
    parser = new_parser("entry create")
    _entry_flags(parser, create=create)
    return parser.parse_args(argv)


def test_go_style_flags_single_and_double_dash_no_abbreviation() -> None:
    parser = new_parser("x")
    flag(parser, "spiffeID", default="")
    repeated_flag(parser, "selector", "")
    ns = parser.parse_args(["-spiffeID", "a", "--selector", "t:1", "-selector=t:2"])
    assert ns.spiffeID == "a"
    assert ns.selector == ["t:1", "t:2"]
    with pytest.raises(CliError, match="unrecognized arguments: -spiffe"):
        parser.parse_args(["-spiffe", "a"])  # Go has no abbreviations


def test_durations_and_int32_bounds() -> None:
    """SPIRE's duration flags (x509/jwt mint -ttl) take Go durations: 1.5h and 500ms are
    durations, a bare 90 has no unit (Go's flag package refuses it too)."""
    assert duration_flag_seconds("1h30m", "ttl") == 5400
    assert duration_flag_seconds("1.5h", "ttl") == 5400
    assert duration_flag_seconds("500ms", "ttl") == 1  # whole seconds, rounded up, never 0
    assert duration_flag_seconds("0", "ttl") == 0
    assert duration_flag_seconds("", "ttl") == 0
    with pytest.raises(CliError, match=r"^-ttl: missing unit in duration '90' \(write 90s"):
        duration_flag_seconds("90", "ttl")
    with pytest.raises(CliError, match=r"^-ttl is not a duration: '1d'"):
        duration_flag_seconds("1d", "ttl")
    with pytest.raises(CliError, match=r"^-ttl must not be negative"):
        duration_flag_seconds("-5m", "ttl")
    with pytest.raises(CliError, match="out of range"):
        duration_flag_seconds(f"{1 << 31}s", "ttl")
    with pytest.raises(CliError, match="-x509SVIDTTL: -1 is out of range"):
        int32_value(-1, "x509SVIDTTL")


def test_read_input_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * (MAX_INPUT_BYTES + 1))
    with pytest.raises(CliError, match="larger than"):
        read_input(str(big), "bundle data")
    with pytest.raises(CliError, match="unable to load bundle data"):
        read_input(str(tmp_path / "missing"), "bundle data")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"hello")))
    assert read_input("-", "data") == b"hello"


def test_entry_from_flags_node_uses_server_id_of_spiffe_id_domain() -> None:
    ns = _entry_ns(["-node", "-spiffeID", "spiffe://td.test/nodes", "-selector", "a:b:c"])
    e = entry_input.entry_from_flags(ns, update=False)
    assert (e.parent_id.trust_domain, e.parent_id.path) == ("td.test", "/spire/server")
    assert [(s.type, s.value) for s in e.selectors] == [("a", "b:c")]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-spiffeID", "spiffe://t/a", "-parentID", "spiffe://t/p"], "at least one selector"),
        (["-spiffeID", "spiffe://t/a", "-selector", "a:b"], "a parent ID is required"),
        (["-parentID", "spiffe://t/p", "-selector", "a:b"], "a SPIFFE ID is required"),
        (["-node", "-spiffeID", "spiffe://t/a", "-selector", "a:b", "-federatesWith", "o.org"],
         "node entries can not federate"),
        (["-spiffeID", "spiffe://t/a/", "-parentID", "spiffe://t/p", "-selector", "a:b"],
         "-spiffeID"),
        (["-spiffeID", "spiffe://t/a", "-parentID", "http://t/p", "-selector", "a:b"],
         "-parentID"),
        (["-spiffeID", "spiffe://t/a", "-parentID", "spiffe://t/p", "-selector", "nocolon"],
         "-selector"),
        (["-spiffeID", "spiffe://t/a", "-parentID", "spiffe://t/p", "-selector", "a:b",
          "-federatesWith", "spiffe://Bad_TD"], "-federatesWith"),
        (["-spiffeID", "spiffe://t/a", "-parentID", "spiffe://t/p", "-selector", "a:b",
          "-jwtSVIDTTL", str(1 << 31)], "-jwtSVIDTTL"),
        (["-spiffeID", "spiffe://t/a", "-parentID", "spiffe://t/p", "-selector", "a:b",
          "-entryExpiry", "-1"], "-entryExpiry"),
    ],
)  # fmt: skip
def test_entry_from_flags_rejects(argv: list[str], message: str) -> None:
    with pytest.raises(CliError, match=message):
        entry_input.entry_from_flags(_entry_ns(argv), update=False)


def test_entry_update_requires_entry_id() -> None:
    ns = _entry_ns(["-spiffeID", "spiffe://t/a", "-parentID", "spiffe://t/p", "-selector", "a:b"],
                   create=False)  # fmt: skip
    with pytest.raises(CliError, match="entry ID is required"):
        entry_input.entry_from_flags(ns, update=True)


def _data(tmp_path: Path, doc: object) -> str:
    path = tmp_path / "e.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_entries_from_data_spire_shape(tmp_path: Path) -> None:
    item = {"spiffe_id": "spiffe://t/a", "parent_id": "spiffe://t/p",
            "selectors": [{"type": "unix", "value": "uid:0"}], "x509_svid_ttl": 5,
            "entryExpiry": 99, "admin": True, "federates_with": ["spiffe://o.org"]}  # fmt: skip
    doc = {"entries": [item]}
    (e,) = entry_input.entries_from_data(_data(tmp_path, doc))
    assert e.x509_svid_ttl == 5 and e.expires_at == 99 and e.admin
    assert list(e.federates_with) == ["o.org"]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"entries": []}, "no entries"),
        ([], "expected a JSON object"),
        ({"entries": [{"spiffe_id": "spiffe://t/a", "ttl": 5}]}, "unknown field 'ttl'"),
        ({"entries": [{"spiffe_id": "spiffe://t/a", "parent_id": "spiffe://t/p",
                       "x509_svid_ttl": True}]}, "expected int"),
        ({"entries": [{"spiffe_id": "spiffe://t/a", "parent_id": "spiffe://t/p",
                       "selectors": [{"type": "", "value": "x"}]}]}, "selectors\\[0\\]"),
        ({"entries": [{"spiffe_id": "nope", "parent_id": "spiffe://t/p"}]}, "spiffe_id"),
        ({"entries": [{"spiffe_id": "spiffe://t/a", "parent_id": "spiffe://t/p",
                       "dns_names": "a.b"}]}, "dns_names"),
    ],
)  # fmt: skip
def test_entries_from_data_rejects(tmp_path: Path, doc: object, message: str) -> None:
    with pytest.raises(CliError, match=message):
        entry_input.entries_from_data(_data(tmp_path, doc))


def test_entries_from_data_bounds_entry_count(tmp_path: Path) -> None:
    one = {"spiffe_id": "spiffe://t/a", "parent_id": "spiffe://t/p"}
    doc = {"entries": [one] * (entry_input.MAX_ENTRIES_PER_FILE + 1)}
    with pytest.raises(CliError, match="more than"):
        entry_input.entries_from_data(_data(tmp_path, doc))


def test_expires_before_sends_spire_layout() -> None:
    assert agent.expires_before("2026-03-04") == "2026-03-04 00:00:00 +0000 +00"
    spire = "2026-03-04 05:06:07 -0700 -07"
    assert agent.expires_before(spire) == spire
    for bad in ("2026-13-01", "yesterday", "2026-03-04T05:06:07Z", "2026-03-04 05:06:07"):
        with pytest.raises(CliError, match="date is not valid"):
            agent.expires_before(bad)


def test_resolve_and_main_errors(capsys: pytest.CaptureFixture[str]) -> None:
    _cmd, rest = resolve(["entry", "show", "-spiffeID", "x"])
    assert rest == ["-spiffeID", "x"]
    assert resolve(["healthcheck"])[1] == []
    assert main(["-h"]) == 0
    assert "entry create" in capsys.readouterr().out
    for argv in (["entry"], ["nope"], [], ["entry", "create", "-bogus"],
                 ["entry", "create", "-spiffeID", "x"]):  # fmt: skip
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("Error: "), (argv, err)
