"""The shape of `kaic/staging`: no import circle, pure modules stay pure, one engine for both
ways (the direction is asked of the destination object, never tested), files of a readable
size."""

from __future__ import annotations

import ast

from tests.import_graph import REPO, cycles, import_graph, imported_names, modules

#: modules with no network and no paramiko: planning and the plain types
PURE = {"kaic.staging.plan", "kaic.staging.ignore", "kaic.staging.names", "kaic.staging.options"}
#: the modules that run a sync for either direction
DIRECTION_FREE = ("kaic/staging/engine.py", "kaic/staging/workers.py")
MAX_LINES = 450


def test_no_import_circle() -> None:
    found = [c for c in cycles(import_graph()) if any(m.startswith("kaic.staging") for m in c)]
    assert found == []


def test_pure_modules_import_no_paramiko() -> None:
    graph, files = import_graph(), modules()
    for name in PURE:
        seen, todo = set(), [name]
        while todo:  # everything `name` imports of kaic, transitively
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(graph[current])
        heavy = {
            m for m in seen if any(n.split(".")[0] == "paramiko" for n in imported_names(files[m]))
        }
        assert not heavy, f"{name} pulls in paramiko through {sorted(heavy)}"


def test_the_engine_never_asks_which_way_a_sync_goes() -> None:
    """`if self.push` is what the split removed: the engine and the workers ask the
    destination-side object, so neither names a direction nor tests one."""
    for rel in DIRECTION_FREE:
        tree = ast.parse((REPO / rel).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                assert node.attr not in ("push", "pull"), f"{rel}:{node.lineno}"
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                named = [
                    o.value
                    for o in operands
                    if isinstance(o, ast.Constant) and o.value in ("push", "pull")
                ]
                assert not named, f"{rel}:{node.lineno} compares with {named}"


def test_files_stay_readable() -> None:
    for name, path in modules().items():
        if name.startswith("kaic.staging"):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            assert lines <= MAX_LINES, f"{name}: {lines} lines"
