"""The shape of `kaic/staging`: no import circle, pure modules stay pure, one engine for both
ways (the direction is asked of the destination object, never tested), files of a readable
size."""

from __future__ import annotations

import ast

from tests.import_graph import ROOT, cycles, graph, imports, modules

STAGING = "kaic.staging"
#: modules with no network and no paramiko: planning and the plain types
PURE = {"kaic.staging.plan", "kaic.staging.ignore", "kaic.staging.names", "kaic.staging.options"}
#: the modules that run a sync for either direction
DIRECTION_FREE = ("kaic/staging/engine.py", "kaic/staging/workers.py")
MAX_LINES = 450


def test_no_import_circle() -> None:
    assert cycles(STAGING) == []


def test_pure_modules_import_no_paramiko() -> None:
    edges = graph(STAGING)
    files = modules(STAGING)
    for name in PURE:
        seen, todo = set(), [name]
        while todo:  # everything `name` imports within kaic.staging, transitively
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(edges[current])
        heavy = {m for m in seen for dep in imports(files[m]) if dep.split(".")[0] == "paramiko"}
        assert not heavy, f"{name} pulls in paramiko through {sorted(heavy)}"


def test_the_engine_never_asks_which_way_a_sync_goes() -> None:
    """`if self.push` is what the split removed: the engine and the workers ask the
    destination-side object, so neither names a direction nor tests one."""
    for rel in DIRECTION_FREE:
        tree = ast.parse((ROOT / rel).read_text(encoding="utf-8"))
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
    for name, path in modules(STAGING).items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= MAX_LINES, f"{name}: {lines} lines"
