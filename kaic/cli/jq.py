"""`--jq EXPR`: jq itself (the `jq` binding on PyPI, the C library), imported only when the
flag is used, so every command keeps its fast start.

`parse_jq` compiles an expression (a mistake is a usage error, exit 2, with jq's own message,
before the command does anything); `run_jq` runs it over the command's JSON document. Each
result is one line: strings raw (as `jq -r` prints them), everything else as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from kaic.errors import UsageError

HINT = 'jq syntax: .id, .[] | .state, map(select(.state == "FAILED")) | length'


def parse_jq(expr: str) -> Any:
    """The compiled program of `expr`; UsageError naming jq's complaint."""
    if not expr.strip():
        raise UsageError("--jq: empty expression", hint=HINT)
    import jq

    try:
        return jq.compile(expr)
    except ValueError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "not a jq expression"
        raise UsageError(f"--jq {expr!r}: {reason}", hint=HINT) from None


def run_jq(expr: str, document: Any, *, show: Callable[[str], str] = str) -> Iterator[str]:
    """The lines `expr` makes of `document`: strings raw (through `show`), other values as
    JSON. A runtime error of the program (`.[0]` of an object) is a usage error too."""
    # Through JSON first, so the program sees what `--json` would print (dates as strings).
    plain = json.loads(json.dumps(document, default=str))
    program = parse_jq(expr)
    try:
        values = program.input_value(plain).all()
    except ValueError as exc:
        raise UsageError(f"--jq {expr!r}: {exc}", hint=HINT) from None
    for value in values:
        yield show(value) if isinstance(value, str) else json.dumps(value, indent=2)
