"""The package's imports read top to bottom: the command line over the API and the worker, over the
domain, over the provider clients, over the database, over settings and plain types. No module
imports one of a higher layer, not even inside a function (a lazy import dodging a cycle), and no
two modules import each other, however indirectly. Read from the source with `ast`: nothing is
imported to check it."""

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).parent.parent / "src"

# Highest first. A module is in the first layer one of whose entries is its name or its package.
LAYERS = [
    ("command line", "wearsync.__main__ wearsync.cli wearsync.dev wearsync.operate wearsync.tail wearsync.sink"),
    ("API and worker", "wearsync.api wearsync.worker wearsync.worker_loop wearsync.sim"),
    (
        "domain",
        "wearsync.deps wearsync.tasks wearsync.sync wearsync.oauth wearsync.webhooks wearsync.queue wearsync.schedule"
        " wearsync.revocation wearsync.metrics_server wearsync.connect_links wearsync.imports wearsync.outbox"
        " wearsync.store wearsync.credentials wearsync.backfills wearsync.app_settings",
    ),
    ("providers", "wearsync.providers"),
    ("database", "wearsync.db"),
    (
        "settings and types",
        "wearsync wearsync.settings wearsync.models wearsync.records wearsync.crypto wearsync.redirects"
        " wearsync.metrics wearsync.logging wearsync.sports wearsync.storable",
    ),
]
# Imports against the order that a change under way removes, and why they are still here.
PENDING: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (a name imported from a package is its module, if it is one)
    line: int
    lazy: bool  # inside a function


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / "wearsync").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports_in(tree: ast.AST, in_function: bool = False) -> Iterator[tuple[str, int, bool]]:
    """(dotted name, line, lazy) of each import of `tree`, but those under `if TYPE_CHECKING:`
    (annotations only: never run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for other in node.orelse:
                yield from _imports_in(other, in_function)
        elif isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno, in_function) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield from ((f"{node.module}.{alias.name}", node.lineno, in_function) for alias in node.names)
        else:
            yield from _imports_in(node, in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))


def imports() -> list[Import]:
    known = modules()

    def module_of(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    found = set()
    for source, path in known.items():
        for name, line, lazy in _imports_in(ast.parse(path.read_text(), str(path))):
            target = module_of(name) if name.startswith("wearsync") else None
            if target is not None and target != source:
                found.add(Import(source, target, line, lazy))
    return sorted(found, key=lambda i: (i.source, i.line, i.target))


def layer(module: str) -> int:
    """0 for the highest layer."""
    for rank, (_, members) in enumerate(LAYERS):
        if any(module == m or (m != "wearsync" and module.startswith(m + ".")) for m in members.split()):
            return rank
    raise AssertionError(f"{module} is in no layer of tests/test_layers.py: put it in one")


def test_every_module_has_a_layer() -> None:
    for module in modules():
        layer(module)


def test_imports_go_down_the_layers() -> None:
    upward = [
        f"{i.source}:{i.line} ({LAYERS[layer(i.source)][0]}) imports {i.target} ({LAYERS[layer(i.target)][0]})"
        + (" inside a function" if i.lazy else "")
        for i in imports()
        if layer(i.target) < layer(i.source) and (i.source, i.target) not in PENDING
    ]
    assert upward == []


def test_the_pending_exceptions_are_still_needed() -> None:
    edges = {(i.source, i.target) for i in imports()}
    assert [edge for edge in PENDING if edge not in edges] == [], "remove them from PENDING"


def test_no_provider_module_imports_the_database_layer() -> None:
    """A provider reaches storage only through its SyncContext, which wearsync.store implements."""
    found = [
        f"{i.source}:{i.line} imports {i.target}"
        for i in imports()
        if i.source.startswith("wearsync.providers")
        and (i.target == "wearsync.db" or i.target.startswith("wearsync.db."))
    ]
    assert found == []


def test_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {module: set() for module in modules()}
    for i in imports():
        graph[i.source].add(i.target)
    cycles: list[str] = []
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> None:
        if module in path:
            cycles.append(" -> ".join([*path[path.index(module) :], module]))
            return
        if module in done:
            return
        path.append(module)
        for target in sorted(graph[module]):
            visit(target)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    assert cycles == []


def test_the_check_sees_lazy_and_upward_imports() -> None:
    """The reader itself: an import inside a function is found and called lazy, one under
    TYPE_CHECKING is left out."""
    source = """
from typing import TYPE_CHECKING
import wearsync.models
if TYPE_CHECKING:
    from wearsync.api import app
def f():
    from wearsync.cli import main
"""
    tree = ast.parse(source)
    assert list(_imports_in(tree)) == [
        ("typing.TYPE_CHECKING", 2, False), ("wearsync.models", 3, False), ("wearsync.cli.main", 7, True),
    ]  # fmt: skip
    assert layer("wearsync.cli") < layer("wearsync.api.views") < layer("wearsync.tasks") < layer("wearsync.db.keys")
    assert layer("wearsync.providers.core") < layer("wearsync.db.tasks") < layer("wearsync.settings")
