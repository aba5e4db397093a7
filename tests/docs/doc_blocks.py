"""Fenced code blocks of README.md and docs/**/*.md, and the marker comment that says how each
is checked.

A marker is the HTML comment on the line right before a block's opening fence:

- ``<!-- test: tests/docs/test_docs_operations.py::test_operations_page -->``: that test reads
  the block's text from the page (``blocks_tested_by``) and runs it, so a page that drifts fails;
- ``<!-- illustrative: <one-line reason> -->``: the block cannot run here (a real cloud metadata
  service, a real Kubernetes cluster, ...), and the reason says why.

There is no third kind: a block that can run here is run (an ``untested`` marker, once allowed
for a few, is now a block without a marker).

tests/docs/test_docs_inventory.py fails on any shell or HCL block without one of these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHELL_LANGUAGES = frozenset({"sh", "bash", "shell", "console"})
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)(?P<lang>[^`\s]*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*(?P<kind>test|illustrative):\s*(?P<value>.*?)\s*-->\s*$")
# A line that starts one of the commands the docs use: what makes an untyped or ``text`` block
# a command block that needs a marker.
COMMAND_LINE = re.compile(
    r"^\s*(\$ )?(plastron-[a-z-]+|spire-server|make|pip|python3?|\.venv/\S+|curl|apt-get|"
    r"softhsm2-util|softhsm-conf/\S+|pkcs11-tool|openssl|eval|export|mkdir|pg_dump|"
    r"mariadb-dump)(\s|$)"
)


@dataclass(frozen=True)
class Block:
    page: Path  # relative to the repository root
    line: int  # of the opening fence, 1-based
    lang: str
    text: str  # the block's lines, the fence's indentation removed
    marker: tuple[str, str] | None  # ("test", "<file>::<name>") or ("illustrative", reason)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def is_commands(self) -> bool:
        if self.lang in SHELL_LANGUAGES:
            return True
        if self.lang in ("", "text"):
            return any(COMMAND_LINE.match(line) for line in self.text.splitlines())
        return False

    @property
    def needs_marker(self) -> bool:
        return self.is_commands or self.lang == "hcl"


def doc_pages() -> list[Path]:
    """README.md and every page under docs/, relative to the repository root."""
    pages = [Path("README.md"), *sorted(p.relative_to(REPO) for p in REPO.glob("docs/**/*.md"))]
    return [p for p in pages if (REPO / p).is_file()]


def _dedent(lines: list[str], indent: str) -> str:
    return "".join(line[len(indent) :] if line.startswith(indent) else line for line in lines)


def page_blocks(page: Path) -> list[Block]:
    lines = (REPO / page).read_text().splitlines(keepends=True)
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, indent = opening.group("fence"), opening.group("indent")
        end = index + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        before = MARKER.match(lines[index - 1]) if index > 0 else None
        blocks.append(
            Block(
                page=page,
                line=index + 1,
                lang=opening.group("lang"),
                text=_dedent(lines[index + 1 : end], indent),
                marker=(before.group("kind"), before.group("value")) if before else None,
            )
        )
        index = end + 1
    return blocks


def all_blocks() -> list[Block]:
    return [block for page in doc_pages() for block in page_blocks(page)]


def blocks_tested_by(test_file: str, test_name: str) -> list[Block]:
    """Every block whose marker names this test (``tests/...py::test_name``), in page order;
    ``test_file`` is the calling module's ``__file__``.

    Fails when there is none: a test that runs documented blocks runs at least one."""
    test_id = f"{Path(test_file).resolve().relative_to(REPO)}::{test_name}"
    found = [b for b in all_blocks() if b.marker == ("test", test_id)]
    assert found, f"no block in README.md or docs/ is marked <!-- test: {test_id} -->"
    return found


def block_tested_by(test_file: str, test_name: str) -> Block:
    """The one block whose marker names this test."""
    found = blocks_tested_by(test_file, test_name)
    assert len(found) == 1, f"{test_name} runs one block, marked: {[b.where for b in found]}"
    return found[0]


@dataclass(frozen=True)
class ConsoleStep:
    """One ``$ command`` of a console block and the output the page shows under it."""

    command: str
    shown_output: list[str]


def console_steps(block: Block) -> list[ConsoleStep]:
    """A console block as commands (``$ `` lines, with their ``\\`` continuations) and output."""
    steps: list[ConsoleStep] = []
    continuing = False
    for line in block.text.splitlines():
        if continuing:
            steps[-1] = ConsoleStep(f"{steps[-1].command}\n{line}", [])
        elif line.startswith("$ "):
            steps.append(ConsoleStep(line[2:], []))
        else:
            assert steps, f"{block.where}: output before the first $ command"
            steps[-1].shown_output.append(line)
        continuing = line.endswith("\\")
    return steps
