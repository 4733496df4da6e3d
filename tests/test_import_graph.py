"""The project's import arrows, read from the source with `ast` (no module is imported).

Layers: `tune.py`, `train.py` → `search` → `trainables` → `lacmfer`, never back, not even
lazily inside a function; `lacmfer` never imports Ray; no cycle among the project's
modules; no module imports another's underscore-private name. Inside `lacmfer`, the rooms
stand in order (`ROOMS`): a room imports only the rooms before it.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("lacmfer", "search", "trainables")
ENTRY_POINTS = ("tune.py", "train.py")
#: Who may not import whom: a module of the key's package never imports these top-level names.
FORBIDDEN = {
    "lacmfer": ("search", "trainables", "tune", "train", "ray"),
    "trainables": ("search", "tune", "train"),
    "search": ("tune", "train"),
}


#: lacmfer's rooms, lowest first; "" is the foundation (the modules directly in lacmfer/).
ROOMS = ("", "data", "method", "run", "reports")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, ast.Module]:
    files = [p for package in PACKAGES for p in (REPO / package).rglob("*.py")]
    files += [REPO / name for name in ENTRY_POINTS]
    return {_module_name(p): ast.parse(p.read_text(encoding="utf-8"), str(p)) for p in files}


def imports(tree: ast.Module, modules: set[str]) -> Iterator[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) of every import anywhere in `tree`."""
    for node in ast.walk(tree):  # functions' bodies too: a lazy import is an arrow all the same
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in modules:  # `from lacmfer import names`: the module lacmfer.names
                    yield submodule, None, node.lineno
                else:
                    yield node.module, alias.name, node.lineno


@functools.cache  # the tests below read one graph
def import_graph() -> tuple[dict[str, set[str]], list[str], list[str]]:
    """Edges among project modules, and the violations of the layers and of privacy."""
    trees = project_modules()
    modules = set(trees)
    edges: dict[str, set[str]] = {name: set() for name in trees}
    upward, private = [], []
    for name, tree in trees.items():
        forbidden = FORBIDDEN.get(name.split(".")[0], ())
        for target, imported, line in imports(tree, modules):
            where = f"{name} (line {line}) imports {target}{'.' + imported if imported else ''}"
            if target.split(".")[0] in forbidden:
                upward.append(where)
            if target in modules:
                edges[name].add(target)
                if imported is not None and imported.startswith("_") and not imported.startswith("__"):
                    private.append(where)
    return edges, upward, private


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, or of one importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges[node]:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_every_package_and_lazy_imports():
    """The checks below would pass vacuously on a parser that missed modules or function bodies."""
    edges, _, _ = import_graph()
    assert {"lacmfer.run.lifecycle", "lacmfer.names", "search.tuner", "trainables.lacmfer_trainable", "train"} <= set(edges)
    assert "search.final_training" in edges["train"]  # imported inside main(), for the Ray path only
    assert "lacmfer.run.lifecycle" in edges["trainables.lacmfer_trainable"]


def test_layers_point_one_way():
    _, upward, _ = import_graph()
    assert upward == []


def test_no_cycle_among_project_modules():
    edges, _, _ = import_graph()
    assert cycles(edges) == []


def test_no_module_imports_another_modules_private_name():
    _, _, private = import_graph()
    assert private == []


def test_the_names_registry_stands_below_data_and_method():
    edges, _, _ = import_graph()
    assert edges["lacmfer.names"] == set()


def test_cycle_finder_finds_a_lazy_cycle():
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"a"}}) == [["a"]] and cycles({"a": {"b"}, "b": set()}) == []


def room_of(module: str) -> str:
    """`lacmfer.method.losses` and `lacmfer.method` → "method"; `lacmfer.config` → "" (the foundation)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else ""


def room_violations(edges: dict[str, set[str]]) -> list[str]:
    """Each import by a lacmfer module of a module in a later room (its own room or an earlier one is fine)."""
    found = []
    for name, targets in edges.items():
        if not name.startswith("lacmfer."):
            continue
        for target in targets:
            if target.startswith("lacmfer.") and ROOMS.index(room_of(target)) > ROOMS.index(room_of(name)):
                found.append(f"{name} imports {target}")
    return sorted(found)


def test_each_room_imports_only_the_rooms_before_it():
    """Planted `from lacmfer.run import device` in lacmfer/method/schedules.py: fails, naming the edge."""
    edges, _, _ = import_graph()
    assert {room_of(name) for name in edges if name.startswith("lacmfer.")} == set(ROOMS)
    assert room_violations(edges) == []


def test_room_check_flags_an_import_from_a_later_room():
    edges = {"lacmfer.method.losses": {"lacmfer.run.trainer"}, "lacmfer.config": {"lacmfer.names"}}
    assert room_violations(edges) == ["lacmfer.method.losses imports lacmfer.run.trainer"]
