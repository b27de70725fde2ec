"""The rules of `kaic/models` (ARCHITECTURE.md "Parts"): it imports only pydantic and the
standard library, and job fields and the array grammar are defined there once."""

from __future__ import annotations

import ast
import sys

from tests.import_graph import PACKAGE, import_graph, imported_names, modules

ALLOWED = {"pydantic", "pydantic_core", "typing_extensions"}


def test_models_import_only_pydantic_and_the_standard_library() -> None:
    graph = import_graph()
    for name, path in modules().items():
        if not name.startswith("kaic.models"):
            continue
        assert all(dep.startswith("kaic.models") for dep in graph[name]), (name, graph[name])
        for dep in imported_names(path):
            top = dep.split(".")[0]
            allowed = top in sys.stdlib_module_names or top in ALLOWED or top == "kaic"
            assert allowed, f"{name} imports {dep}"


def test_the_array_grammar_is_written_once() -> None:
    """No regex for `0-15%4` outside kaic/models/arrays.py (there were three, on both sides
    of the wire): the job file, `--array`, the model and the center use that one."""
    fragments = ("%\\d", "%([0-9]", "%[0-9]")
    for name, path in modules().items():
        if path == PACKAGE / "models" / "arrays.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not any(f in node.value for f in fragments), f"{name}: {node.value!r}"


def test_job_file_keys_are_not_listed_again() -> None:
    """kaic/jobspec derives its keys from the model: no tuple there spells out the job's
    fields (the tables it had: TOP_KEYS, RESOURCE_KEYS, _FLAGS)."""
    from kaic.models.jobs import JobSubmit

    wire = set(JobSubmit.model_fields) - {"run", "env", "name"}  # common words in messages
    for name, path in modules().items():
        # `reference` holds the words and examples of `kaic help jobfile` per key: a table
        # of prose, kept equal to the model's keys by tests/unit/test_jobfile_reference.py
        if not name.startswith("kaic.jobspec") or name == "kaic.jobspec.reference":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)):
                items = node.keys if isinstance(node, ast.Dict) else node.elts
                words = {i.value for i in items if isinstance(i, ast.Constant)}
                assert len(words & wire) < 3, f"{name}:{node.lineno} lists {sorted(words & wire)}"
