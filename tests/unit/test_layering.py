"""The import contract: which room of Plastron may import which, and no import cycles.

Rooms (import name → folder): ``plastron`` core (plastron/), ``plastron.hsm`` (hsm/),
``plastron.tpm`` (tpm/), ``plastron.server`` (server/), ``plastron.agent`` (agent/),
``plastron.oidc`` (oidc/, the standalone OIDC discovery provider).

1. core imports none of hsm, tpm, server, agent, oidc;
2. hsm and tpm import no runtime (server, agent, oidc);
3. the server and the agent never import each other;
4. the OIDC discovery provider imports neither the server nor the agent (it talks to them
   over their APIs), and neither imports it;
5. no import cycle between modules.

Every import statement counts, wherever it is written (a function-local import is still a
dependency), except those under ``if TYPE_CHECKING:``, which never run. The graph is read from
the source with ``ast``: nothing is imported. ``make lint`` runs this file as a script, which
prints each contract and the imports that break it; pytest runs the same checks.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROOMS = {
    "plastron": ROOT / "plastron",
    "plastron.hsm": ROOT / "hsm",
    "plastron.tpm": ROOT / "tpm",
    "plastron.server": ROOT / "server",
    "plastron.agent": ROOT / "agent",
    "plastron.oidc": ROOT / "oidc",
}
RUNTIMES = ("plastron.server", "plastron.agent", "plastron.oidc")
HARDWARE = ("plastron.hsm", "plastron.tpm")
# Generated protobuf and gRPC code: its imports are the generator's, not ours.
GENERATED_SUFFIXES = ("_pb2.py", "_pb2_grpc.py", "_grpc.py")


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported} (l.{self.line})"


@dataclass(frozen=True)
class Contract:
    name: str
    sources: tuple[str, ...]
    forbidden: tuple[str, ...]


CONTRACTS = (
    Contract(
        "core imports no room",
        ("plastron",),
        ("plastron.hsm", "plastron.tpm", *RUNTIMES),
    ),
    Contract("hsm and tpm import no runtime", HARDWARE, RUNTIMES),
    Contract("the server does not import the agent", ("plastron.server",), ("plastron.agent",)),
    Contract("the agent does not import the server", ("plastron.agent",), ("plastron.server",)),
    Contract(
        "the OIDC discovery provider imports neither the server nor the agent",
        ("plastron.oidc",),
        ("plastron.server", "plastron.agent"),
    ),
    Contract(
        "neither the server nor the agent imports the OIDC discovery provider",
        ("plastron.server", "plastron.agent"),
        ("plastron.oidc",),
    ),
)


def room_of(module: str) -> str:
    """The room a module belongs to: the longest room name it lies under."""
    best = "plastron"
    for room in ROOMS:
        if (module == room or module.startswith(room + ".")) and len(room) > len(best):
            best = room
    return best


def _module_files() -> Iterator[tuple[str, Path]]:
    for room, folder in ROOMS.items():
        for path in sorted(folder.rglob("*.py")):
            if path.name.endswith(GENERATED_SUFFIXES):
                continue
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([room, *parts])
            # a room folder inside core (none today) must not be read twice
            if room_of(name) == room:
                yield name, path


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement except those guarded by ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from _statements(ast.Module(body=[child], type_ignores=[]))
        else:
            yield from _statements(node)


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def build_graph() -> dict[str, list[Import]]:
    """Our modules, each with the imports of our modules it makes."""
    files = dict(_module_files())
    graph: dict[str, list[Import]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        found: list[Import] = []
        for node in _statements(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _absolute(module, path.name == "__init__.py", node)
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    targets.append(submodule if submodule in files else base)
            found += [Import(module, t, node.lineno) for t in targets if t in files]
        graph[module] = list(dict.fromkeys(found))  # one per (target, line)
    return graph


def contract_violations(graph: dict[str, list[Import]], contract: Contract) -> list[Import]:
    return [
        imp
        for imports in graph.values()
        for imp in imports
        if room_of(imp.importer) in contract.sources and room_of(imp.imported) in contract.forbidden
    ]


def find_cycles(graph: dict[str, list[Import]]) -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself),
    each as one cycle through it (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    edges = {m: sorted({i.imported for i in imps}) for m, imps in graph.items()}
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, pos = work.pop()
            if pos == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if pos < len(edges[node]):
                work.append((node, pos + 1))
                nxt = edges[node][pos]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1 or node in edges[node]:
                    components.append(_one_cycle(sorted(component), edges))
    return components


def _one_cycle(component: list[str], edges: dict[str, list[str]]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside it."""
    members = set(component)
    start = component[0]
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in edges[node]:
                if nxt not in members:
                    continue
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt not in came_from:
                    came_from[nxt] = node
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    return component


def report(graph: dict[str, list[Import]]) -> tuple[list[str], bool]:
    """The contract output (one line per contract, then each break) and whether all hold."""
    lines = [f"import contract: {len(graph)} modules, {sum(map(len, graph.values()))} imports"]
    ok = True
    for contract in CONTRACTS:
        broken = contract_violations(graph, contract)
        lines.append(f"{contract.name}: {'BROKEN' if broken else 'KEPT'}")
        lines += [f"    {imp}" for imp in broken]
        ok = ok and not broken
    cycles = find_cycles(graph)
    lines.append(f"no import cycles: {'BROKEN' if cycles else 'KEPT'}")
    lines += ["    " + " -> ".join(cycle) for cycle in cycles]
    return lines, ok and not cycles


# ---- the tests ----------------------------------------------------------------------------


def test_graph_sees_every_room() -> None:
    graph = build_graph()
    rooms = {room_of(m) for m in graph}
    assert rooms == set(ROOMS)
    assert "plastron.server.runtime" in graph and "plastron.tpm.verify" in graph


def test_contracts_hold() -> None:
    lines, ok = report(build_graph())
    assert ok, "\n".join(lines)


def test_a_forbidden_import_is_reported() -> None:
    graph = build_graph()
    graph["plastron.errors"] = [Import("plastron.errors", "plastron.hsm.uri", 1)]
    graph["plastron.hsm.uri"] = [Import("plastron.hsm.uri", "plastron.agent.cache", 2)]
    lines, ok = report(graph)
    assert not ok
    assert "    plastron.errors -> plastron.hsm.uri (l.1)" in lines
    assert "    plastron.hsm.uri -> plastron.agent.cache (l.2)" in lines


def test_a_cycle_is_reported() -> None:
    graph = {
        "plastron.a": [Import("plastron.a", "plastron.b", 1)],
        "plastron.b": [Import("plastron.b", "plastron.c", 1)],
        "plastron.c": [Import("plastron.c", "plastron.a", 1)],
        "plastron.d": [Import("plastron.d", "plastron.a", 1)],
    }
    assert find_cycles(graph) == [["plastron.a", "plastron.b", "plastron.c", "plastron.a"]]


def test_type_checking_imports_do_not_count() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import plastron.server\nelse:\n    import plastron.hsm\n"
        "def f():\n    import plastron.tpm\n"
    )
    names = [alias.name for node in _statements(tree) for alias in node.names]
    assert names == ["TYPE_CHECKING", "plastron.hsm", "plastron.tpm"]


def main() -> int:
    lines, ok = report(build_graph())
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
