"""`--jq EXPR`: jq itself, through the `jq` binding (`kaic/cli/jq.py`)."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from kaic.cli.jq import parse_jq, run_jq
from kaic.errors import ExitCode, UsageError

DOC: list[dict[str, Any]] = [
    {"id": "42", "state": "FAILED", "exit_code": 3, "resources": {"gpus": 2}, "tags": ["a", "b"]},
    {"id": "43", "state": "COMPLETED", "exit_code": 0, "resources": {"gpus": 0}, "tags": []},
]


@pytest.mark.parametrize(
    ("expr", "lines"),
    [
        (".[] | .id", ["42", "43"]),  # strings raw, as `jq -r`
        (".[0].exit_code", ["3"]),
        (".[-1].id", ["43"]),
        (".[7]", ["null"]),
        ("length", ["2"]),
        (".[].tags[]", ["a", "b"]),
        (".[0].resources", ['{\n  "gpus": 2\n}']),
        # what only jq proper does: select, map, string interpolation, arithmetic
        ('.[] | select(.state == "FAILED") | .id', ["42"]),
        ("map(.resources.gpus) | add", ["2"]),
        ('.[] | "\\(.id) \\(.state)"', ["42 FAILED", "43 COMPLETED"]),
        ("[.[] | select(.exit_code > 0)] | length", ["1"]),
    ],
)
def test_jq(expr: str, lines: list[str]) -> None:
    assert list(run_jq(expr, DOC)) == lines


def test_the_whole_document_is_json() -> None:
    assert list(run_jq(".", {"a": None})) == ['{\n  "a": null\n}']
    assert list(run_jq(".", [])) == ["[]"]


@pytest.mark.parametrize("expr", ["", ".a |", ".[", ".a[x", "map(", "}"])
def test_a_malformed_expression_is_a_usage_error(expr: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_jq(expr)
    assert info.value.exit_code == ExitCode.USAGE
    assert "jq syntax" in (info.value.hint or "")


@pytest.mark.parametrize("expr", [".[0].id.x", ".[0] | .[1]", ".[0].exit_code[]"])
def test_a_program_that_does_not_fit_the_document(expr: str) -> None:
    with pytest.raises(UsageError) as info:
        list(run_jq(expr, DOC))
    assert info.value.message.startswith(f"--jq {expr!r}: ")


def test_jq_is_loaded_only_when_used() -> None:
    sys.modules.pop("jq", None)
    import kaic.cli.jq  # noqa: F401

    assert "jq" not in sys.modules
    parse_jq(".")
    assert "jq" in sys.modules
