"""`--jq EXPR`: a small built-in subset of jq, to pick fields out of `--json` output without
installing jq.

Supported: `.` (the whole document), `.field`, `.a.b`, `."odd key"`, `.[]` (every element of
an array, every value of an object), `.[N]` (an element; negative counts from the end),
`length`, and pipes `|` between them, e.g. `kaic jobs --jq '.[] | .id'`,
`kaic show 42 --jq .events | length`. Each result is printed on its own line: strings raw
(as `jq -r` does), everything else as JSON. Stdlib only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from kaic.errors import UsageError

# One step of a path: .name, ."quoted name", [], [N]  (after a leading "." or another step)
_STEP = re.compile(
    r"""\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | \.?"(?P<quoted>(?:[^"\\]|\\.)*)"
      | \.?\[\s*(?P<index>-?\d+)?\s*\]""",
    re.VERBOSE,
)

Filter = Callable[[Any], Iterator[Any]]

SUPPORTED = ".  .field  .a.b  .[]  .[N]  length  and pipes (|)"


def _bad(expr: str, why: str) -> UsageError:
    return UsageError(f"--jq {expr!r}: {why}", hint=f"supported: {SUPPORTED}")


def _type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _field(name: str, expr: str) -> Filter:
    def run(value: Any) -> Iterator[Any]:
        if value is None:
            yield None
        elif isinstance(value, dict):
            yield value.get(name)
        else:
            raise _bad(expr, f"cannot index {_type(value)} with {name!r}")

    return run


def _index(n: int, expr: str) -> Filter:
    def run(value: Any) -> Iterator[Any]:
        if value is None:
            yield None
        elif isinstance(value, list):
            yield value[n] if -len(value) <= n < len(value) else None
        else:
            raise _bad(expr, f"cannot index {_type(value)} with a number")

    return run


def _each(expr: str) -> Filter:
    def run(value: Any) -> Iterator[Any]:
        if isinstance(value, list):
            yield from value
        elif isinstance(value, dict):
            yield from value.values()
        else:
            raise _bad(expr, f"cannot iterate over {_type(value)}")

    return run


def _length(expr: str) -> Filter:
    def run(value: Any) -> Iterator[Any]:
        if value is None:
            yield 0
        elif isinstance(value, bool):
            raise _bad(expr, "boolean has no length")
        elif isinstance(value, (int, float)):
            yield abs(value)
        elif isinstance(value, (str, list, dict)):
            yield len(value)
        else:
            raise _bad(expr, f"{_type(value)} has no length")

    return run


def _chain(first: Filter, then: Filter) -> Filter:
    def run(value: Any) -> Iterator[Any]:
        for item in first(value):
            yield from then(item)

    return run


def _identity(value: Any) -> Iterator[Any]:
    yield value


def _path(term: str, expr: str) -> Filter:
    if term == ".":
        return _identity
    if not term.startswith("."):
        raise _bad(expr, f"unsupported expression {term!r}")
    steps: Filter = _identity
    pos = 0
    while pos < len(term):
        match = _STEP.match(term, pos)
        if match is None or (pos == 0 and not term.startswith(".")):
            raise _bad(expr, f"unsupported expression {term!r}")
        if match["name"] is not None:
            step = _field(match["name"], expr)
        elif match["quoted"] is not None:
            step = _field(json.loads(f'"{match["quoted"]}"'), expr)
        elif match["index"] is not None:
            step = _index(int(match["index"]), expr)
        else:
            step = _each(expr)
        steps = _chain(steps, step)
        pos = match.end()
    return steps


def parse_jq(expr: str) -> Filter:
    """The filter `expr` names; UsageError (exit 2) for anything outside the subset."""
    if not expr.strip():
        raise _bad(expr, "empty expression")
    result: Filter = _identity
    for raw in expr.split("|"):
        term = raw.strip()
        if not term:
            raise _bad(expr, "empty step between pipes")
        step = _length(expr) if term == "length" else _path(term, expr)
        result = _chain(result, step)
    return result


def run_jq(expr: str, document: Any, *, show: Callable[[str], str] = str) -> Iterator[str]:
    """The lines `expr` makes of `document`: strings raw (through `show`), other values as
    JSON."""
    # Through JSON first, so the filter sees what `--json` would print (dates as strings).
    plain = json.loads(json.dumps(document, default=str))
    for value in parse_jq(expr)(plain):
        yield show(value) if isinstance(value, str) else json.dumps(value, indent=2)
