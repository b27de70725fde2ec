"""`--jq EXPR`: the built-in jq subset (`kaic/cli/jq.py`)."""

from __future__ import annotations

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
        (".[1].resources.gpus", ["0"]),
        (".[-1].id", ["43"]),
        (".[7]", ["null"]),
        (".[0].nope", ["null"]),
        ("length", ["2"]),
        (".[0].tags | length", ["2"]),
        (".[].tags[]", ["a", "b"]),
        (".[0].resources", ['{\n  "gpus": 2\n}']),
        ('.[0]."exit_code"', ["3"]),
        (".[] | .resources | .gpus", ["2", "0"]),
        ("[] | length", None),
    ],
)
def test_subset(expr: str, lines: list[str] | None) -> None:
    if lines is None:
        with pytest.raises(UsageError):
            list(run_jq(expr, DOC))
    else:
        assert list(run_jq(expr, DOC)) == lines


def test_the_whole_document_is_json() -> None:
    assert list(run_jq(".", {"a": None})) == ['{\n  "a": null\n}']
    assert list(run_jq(".", [])) == ["[]"]


@pytest.mark.parametrize("expr", ["", "foo", ".a b", ".a |", "map(.id)", ".[", "..", ".a[x]"])
def test_outside_the_subset_is_a_usage_error(expr: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_jq(expr)
    assert info.value.exit_code == ExitCode.USAGE
    assert "supported:" in (info.value.hint or "")


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        (".[0].id.x", "cannot index string with 'x'"),
        (".[0] | .[1]", "cannot index object with a number"),
        (".[0].exit_code[]", "cannot iterate over number"),
    ],
)
def test_a_filter_that_does_not_fit_the_document(expr: str, why: str) -> None:
    with pytest.raises(UsageError) as info:
        list(run_jq(expr, DOC))
    assert why in info.value.message
