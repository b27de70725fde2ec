"""Job array specifications (`0-15%4`, `1,3,5`, `0-9,20%2`): the one grammar and parser.

Both sides of the wire use it: `JobSubmit.array` (its OpenAPI `pattern` is `ARRAY_PATTERN`,
its validator `parse_array`), `kaic submit` before sending (`kaic.jobspec`), and the
center when it creates the tasks (`kaic.center.jobs.service`). Messages are the user's:
`kaic submit` shows them with the job file's line or the flag.
"""

from __future__ import annotations

import re

from kaic.models.limits import MAX_ARRAY_INDEX, MAX_ARRAY_TASKS

#: ranges and single indices, comma-separated, optionally `%N` (at most N tasks at once)
ARRAY_PATTERN = r"^\d+(-\d+)?(,\d+(-\d+)?)*(%\d+)?$"
ARRAY_FORMS = "a range 0-15, a list 1,3,5, or both (0-3,8), optionally %N to run N at a time"
_SPEC = re.compile(ARRAY_PATTERN)


def parse_array(spec: str) -> tuple[list[int], int | None]:
    """(sorted task indices, concurrency limit or None); ValueError with a reason."""
    if not _SPEC.match(spec):
        raise ValueError(f"not a valid array spec {spec!r}; use {ARRAY_FORMS}")
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
            raise ValueError(f"range {part!r} starts after it ends (in {spec!r})")
        if high - low + 1 + len(indices) > MAX_ARRAY_TASKS:
            raise ValueError(f"array {spec!r} has more than {MAX_ARRAY_TASKS} tasks")
        indices.update(range(low, high + 1))
    limit = int(limit_text) if limit_text and len(limit_text) <= 9 else None
    if limit_text and (limit is None or limit > MAX_ARRAY_TASKS):
        raise ValueError(f"array {spec!r}: the `%` limit may be at most {MAX_ARRAY_TASKS}")
    if limit == 0:
        raise ValueError(f"%{limit_text}: must run at least 1 task at a time (in {spec!r})")
    return sorted(indices), limit
