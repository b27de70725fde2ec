"""Committed generated files (completions, OpenAPI) must match what the code generates."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import REPO


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completions_are_current(shell: str) -> None:
    generated = _script("gen_completions").generate(shell)
    committed = (REPO / "completions" / f"kaic.{shell}").read_text()
    assert "kaic" in generated
    assert generated == committed, "completions are stale: run `make completions`"


def test_openapi_document_is_current() -> None:
    generated = _script("gen_openapi").generate()
    committed = Path(REPO / "docs" / "openapi.json").read_text()
    assert '"/v1/auth/token"' in generated
    assert generated == committed, "docs/openapi.json is stale: run `make openapi`"
