"""Every shell and HCL block of README.md and docs/ is either run by a test that reads it from
the page, or marked illustrative with the reason it cannot run here (tests/docs/doc_blocks.py).

A new block without a marker, a marker naming a test that does not exist, or a test that does
not read its blocks from the pages fails here."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.docs.doc_blocks import REPO, Block, all_blocks

READERS = frozenset({"blocks_tested_by", "block_tested_by"})


def _test_functions(path: Path) -> Iterator[tuple[str, set[str]]]:
    """(name, names it calls) of each module-level ``test_*`` function of ``path``."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
            "test_"
        ):
            called = {
                call.func.id
                for call in ast.walk(node)
                if isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
            }
            yield node.name, called


def _module_reads_blocks(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    return any(isinstance(node, ast.Name) and node.id in READERS for node in ast.walk(tree))


def _test_marker_problem(block: Block, test_id: str) -> str | None:
    file, sep, name = test_id.partition("::")
    path = REPO / file
    if not sep or not file.startswith("tests/") or not path.is_file():
        return f"{block.where}: <!-- test: {test_id} --> names no test file"
    if name not in dict(_test_functions(path)):
        return f"{block.where}: {file} has no test function {name!r}"
    if not _module_reads_blocks(path):
        return f"{block.where}: {file} does not read its blocks from the page (blocks_tested_by)"
    return None


def test_every_command_and_config_block_is_tested_or_illustrative() -> None:
    problems = []
    for block in all_blocks():
        if block.lang == "":
            problems.append(f"{block.where}: a fence without a language (text, sh, hcl, ...)")
        if not block.needs_marker:
            continue
        if block.marker is None:
            problems.append(
                f"{block.where}: a {block.lang or 'command'} block with neither "
                "<!-- test: tests/...py::test_name --> nor <!-- illustrative: reason --> before it"
            )
        elif block.marker[0] != "test" and len(block.marker[1]) < 10:
            problems.append(f"{block.where}: an {block.marker[0]} marker says why, in a line")
        elif block.marker[0] == "test":
            problem = _test_marker_problem(block, block.marker[1])
            if problem:
                problems.append(problem)
    assert not problems, "\n".join(problems)
