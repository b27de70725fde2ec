"""Slurm's compressed host lists ("gpu[01-03,07],login1") as node names, for `Job.nodes`."""

from __future__ import annotations

import re

#: names of one job are few; a corrupt record must not make a huge list
MAX_NAMES = 4096


def _split_top(text: str) -> list[str]:
    """Split on the commas outside brackets."""
    return [part for part in re.split(r",(?![^\[]*\])", text) if part]


def _expand_one(item: str) -> list[str]:
    match = re.match(r"^(.*?)\[([^\]]*)\](.*)$", item)
    if match is None:
        return [item]
    prefix, ranges, rest = match.groups()
    names: list[str] = []
    for part in ranges.split(","):
        first, _, last = part.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise ValueError(f"not a host range: {part!r}")
        width = len(first)
        for number in range(int(first), int(last or first) + 1):
            for tail in _expand_one(rest) if rest else [""]:
                names.append(f"{prefix}{number:0{width}d}{tail}")
                if len(names) > MAX_NAMES:
                    raise ValueError("too many host names")
    return names


def expand_hostlist(text: str | None) -> tuple[str, ...]:
    """The node names of a Slurm host list, in order; () for none or one that does not
    parse (the names are informative: a job runs all the same)."""
    if not text or text in ("None", "(null)"):
        return ()
    try:
        names = [name for item in _split_top(text.strip()) for name in _expand_one(item)]
    except ValueError:
        return ()
    return tuple(names[:MAX_NAMES])
