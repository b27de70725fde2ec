"""Job array specifications: `0-15%4`, `1,3,5`, `0-9,20%2`."""

from __future__ import annotations

import re

MAX_ARRAY_TASKS = 10_000
_SPEC = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*(%\d+)?$")


def parse_array(spec: str) -> tuple[list[int], int | None]:
    """(sorted task indices, concurrency limit or None); ValueError with a reason."""
    if not _SPEC.match(spec):
        raise ValueError(f"array {spec!r} is not like `0-15%4` or `1,3,5`")
    body, _, limit_text = spec.partition("%")
    indices: set[int] = set()
    for part in body.split(","):
        first, _, last = part.partition("-")
        low, high = int(first), int(last or first)
        if high < low:
            raise ValueError(f"array range {part!r} runs backwards")
        if high - low + 1 + len(indices) > MAX_ARRAY_TASKS:
            raise ValueError(f"array {spec!r} has more than {MAX_ARRAY_TASKS} tasks")
        indices.update(range(low, high + 1))
    limit = int(limit_text) if limit_text else None
    if limit == 0:
        raise ValueError(f"array {spec!r}: the `%` limit must be at least 1")
    return sorted(indices), limit
