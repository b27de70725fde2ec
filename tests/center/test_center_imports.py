"""The center's imports, read from the source (lazy imports included: tests/import_graph.py).

- No import circles: every center module imports, and no chain of kaic imports comes back
  to where it started. A circle works only as long as each of its imports stays lazy or
  happens to run in the right order; `create_app` once reached `kaic.center.server` through
  the SFTP endpoint, which in turn imports the app factory. Helpers two modules need go to
  a third that both import (`kaic.center.listen`).
- The processes that run as a user's unix account (the SFTP worker, the checksum helper)
  load nothing of the center but the storage rule and the account switch: no settings, no
  database, nothing that reads the center's secrets.
"""

from __future__ import annotations

import importlib

import pytest

from tests.import_graph import cycles, import_graph, modules, path_through


def _described(graph: dict[str, set[str]], found: list[list[str]]) -> str:
    return "\n".join(" -> ".join(path_through(graph, component)) for component in found)


@pytest.mark.parametrize("name", [m for m in modules() if m.startswith("kaic.center")])
def test_every_center_module_imports(name: str) -> None:
    importlib.import_module(name)


def test_no_import_cycle_through_the_center() -> None:
    graph = import_graph()
    found = [c for c in cycles(graph) if any(m.startswith("kaic.center") for m in c)]
    assert not found, "import circles through kaic.center:\n" + _described(graph, found)


def test_no_import_cycle_anywhere_in_kaic() -> None:
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import circles in kaic:\n" + _described(graph, found)


def test_the_graph_sees_lazy_imports_and_circles() -> None:
    # The check itself: a circle closed only by a function-level import is found, and
    # TYPE_CHECKING imports are not edges.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert path_through(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    real = import_graph()
    assert "kaic.center.app" in real["kaic.center.server"]  # `serve` imports it lazily
    assert "kaic.center.sftp" in real["kaic.center.app"]  # `create_app` likewise


#: what the helpers running as users may load of kaic, whatever they import
HELPER_MODULES = {
    "kaic",  # its __init__: the version only
    "kaic.center.runas",
    "kaic.center.storage",
    "kaic.center.files",
    "kaic.center.sftp.worker",
    "kaic.center.sftp.fs",
    "kaic.center.sftp.subsystem",
}


@pytest.mark.parametrize("helper", ["kaic.center.files", "kaic.center.sftp.worker"])
def test_helpers_running_as_users_load_nothing_of_the_center(helper: str) -> None:
    graph = import_graph()
    reached, pending = {helper}, [helper]
    while pending:
        for module in graph[pending.pop()] - reached:
            reached.add(module)
            pending.append(module)
    assert reached <= HELPER_MODULES, sorted(reached - HELPER_MODULES)
