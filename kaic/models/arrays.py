"""Job array specifications (`0-15%4`, `1,3,5`, `0-9,20%2`), checked against the limits."""

from __future__ import annotations

import re

from kaic.models.limits import MAX_ARRAY_INDEX, MAX_ARRAY_TASKS

_SPEC = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*(%\d+)?$")


def parse_array(spec: str) -> tuple[list[int], int | None]:
    """(sorted task indices, concurrency limit or None); ValueError with a reason."""
    if not _SPEC.match(spec):
        raise ValueError(f"array {spec!r} is not like `0-15%4` or `1,3,5`")
    body, _, limit_text = spec.partition("%")
    indices: set[int] = set()
    for part in body.split(","):
        first, _, last = part.partition("-")
        # Compared as text first: a thousand digits must not become a thousand-digit int.
        if max(len(first), len(last)) > len(str(MAX_ARRAY_INDEX)):
            raise ValueError(f"array {spec!r}: task indices go up to {MAX_ARRAY_INDEX}")
        low, high = int(first), int(last or first)
        if high > MAX_ARRAY_INDEX:
            raise ValueError(f"array {spec!r}: task indices go up to {MAX_ARRAY_INDEX}")
        if high < low:
            raise ValueError(f"array range {part!r} runs backwards")
        if high - low + 1 + len(indices) > MAX_ARRAY_TASKS:
            raise ValueError(f"array {spec!r} has more than {MAX_ARRAY_TASKS} tasks")
        indices.update(range(low, high + 1))
    limit = int(limit_text) if limit_text and len(limit_text) <= 9 else None
    if limit_text and (limit is None or limit > MAX_ARRAY_TASKS):
        raise ValueError(f"array {spec!r}: the `%` limit may be at most {MAX_ARRAY_TASKS}")
    if limit == 0:
        raise ValueError(f"array {spec!r}: the `%` limit must be at least 1")
    return sorted(indices), limit
