"""docs/agent.md's command synopsis: each line names a ``plastron-agent`` command that exists,
and every flag it shows is one that command takes (read from the command's own ``-h``)."""

from __future__ import annotations

import re

import pytest

from plastron.agent.cli.main import main as agent_main
from tests.docs.doc_blocks import Block, blocks_tested_by

FLAG = re.compile(r"(?<![\w-])-[a-zA-Z]+")


def _help(words: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        agent_main([*words, "-h"])
    assert exited.value.code == 0, words
    return capsys.readouterr().out


def _synopsis_lines(block: Block) -> list[str]:
    return [line for line in block.text.splitlines() if line.strip()]


def test_agent_synopsis_matches_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    (block,) = blocks_tested_by(__file__, "test_agent_synopsis_matches_the_commands")
    for line in _synopsis_lines(block):
        program, *rest = line.split()
        assert program == "plastron-agent", line
        first_flag = next((i for i, w in enumerate(rest) if w.startswith(("-", "["))), len(rest))
        words = rest[:first_flag]  # the command: run, api fetch x509, ...
        shown = _help(words, capsys)
        for flag in FLAG.findall(line):
            assert re.search(rf"(?<![\w-]){flag}\b", shown), f"{line}: {flag} not in its -h"
