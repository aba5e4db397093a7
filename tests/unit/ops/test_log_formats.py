"""The text (logfmt) and JSON log formats: fields from the template and from ``extra``."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from plastron.errors import ConfigError
from plastron.logs import (
    JsonFormatter,
    LogfmtFormatter,
    check_log_file,
    fields,
    logfmt_value,
    open_log_file,
)
from plastron.spiffe.ids import SpiffeId


def _record(msg: str, *args: object, extra: dict[str, object] | None = None) -> logging.LogRecord:
    record = logging.LogRecord("plastron.test", logging.INFO, __file__, 1, msg, args, None)
    for key, value in (extra or {}).items():
        setattr(record, key, value)
    return record


def _logfmt_pairs(line: str) -> dict[str, str]:
    """A small logfmt reader: bare words, or JSON strings."""
    pairs: dict[str, str] = {}
    for match in re.finditer(r'([\w.]+)=("(?:[^"\\]|\\.)*"|\S*)', line):
        raw = match.group(2)
        pairs[match.group(1)] = json.loads(raw) if raw.startswith('"') else raw
    return pairs


def test_template_fields_become_keys_and_values_with_spaces_stay_whole() -> None:
    agent = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/x")
    record = _record("agent attested agent_id=%s reason=%s", agent, 'bad "thing" = x\nforged=1')
    doc = json.loads(JsonFormatter().format(record))
    assert doc["msg"] == "agent attested"
    assert doc["agent_id"] == str(agent)
    assert doc["reason"] == 'bad "thing" = x\nforged=1'
    line = LogfmtFormatter().format(record)
    assert "\n" not in line
    pairs = _logfmt_pairs(line)
    assert pairs["msg"] == "agent attested" and pairs["level"] == "info"
    assert pairs["agent_id"] == str(agent)
    assert pairs["reason"] == 'bad "thing" = x\nforged=1'
    assert "forged" not in pairs


def test_extra_fields_keep_types_in_json_and_reserved_names_are_prefixed() -> None:
    record = _record(
        "server started",
        extra=fields(plugins=["KeyManager:disk", "DataStore:sql"], count=3, ok=True, msg="x"),
    )
    doc = json.loads(JsonFormatter().format(record))
    assert doc["plugins"] == ["KeyManager:disk", "DataStore:sql"]
    assert doc["count"] == 3 and doc["ok"] is True
    assert doc["msg"] == "server started" and doc["fields.msg"] == "x"
    pairs = _logfmt_pairs(LogfmtFormatter().format(record))
    assert pairs["plugins"] == "KeyManager:disk,DataStore:sql" and pairs["ok"] == "true"


def test_prefix_placeholders_and_mismatched_templates_fall_back_to_the_rendered_text() -> None:
    record = _record("%s call refused method=%s", "Workload API", "/a/B")
    doc = json.loads(JsonFormatter().format(record))
    assert doc["msg"] == "Workload API call refused" and doc["method"] == "/a/B"
    odd = _record("count %d of %d", 1, 2)
    assert json.loads(JsonFormatter().format(odd))["msg"] == "count 1 of 2"


def test_no_python_reprs_in_text_values() -> None:
    assert logfmt_value("plain-word") == "plain-word"
    assert logfmt_value("") == '""'
    assert logfmt_value("two words") == '"two words"'
    assert logfmt_value(b"secret") == '"<6 bytes>"'
    assert logfmt_value(["a", 1]) == "a,1"


def test_check_log_file_refuses_what_opening_refuses_and_creates_nothing(tmp_path: Path) -> None:
    for bad in (tmp_path / "no" / "x.log", tmp_path):
        with pytest.raises(ConfigError) as checked:
            check_log_file(str(bad))
        with pytest.raises(ConfigError) as opened:
            open_log_file(str(bad))
        assert str(checked.value) == str(opened.value)
    check_log_file(str(tmp_path / "new.log"))
    assert not (tmp_path / "new.log").exists()
    check_log_file("")  # no log_file: stderr
    # the server's data_dir, made by run before it opens the log
    check_log_file(str(tmp_path / "data" / "server.log"), made_by_run=tmp_path / "data")
