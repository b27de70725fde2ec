"""Numbers as people read them, for human output only (`--json` keeps exact values): sizes
(`1.2 GB`), moments (local time to the second, and how long ago: `3 min ago`) and spans of
time (`4h`, `1d12h`: `kaic.durations.format_duration`, which `--time` reads back).

Stdlib only: the flows and the CLI both use it.
"""

from __future__ import annotations

from datetime import datetime, timezone

_SIZE_UNITS = ("kB", "MB", "GB", "TB", "PB")


def size(nbytes: int | float) -> str:
    """`532 B`, `1.2 GB`, `15 MB` — decimal units (as disks and networks count), three
    significant digits at most."""
    value = float(nbytes)
    if abs(value) < 1000:
        return f"{int(value)} B"
    index = 0
    value /= 1000
    while abs(value) >= 999.5 and index < len(_SIZE_UNITS) - 1:
        value /= 1000
        index += 1
    unit = _SIZE_UNITS[index]
    digits = 1 if abs(value) < 9.95 else 0
    return f"{value:.{digits}f} {unit}"


def clock(seconds: float) -> str:
    """`1:02:03` — hours unbounded, as `squeue` shows elapsed time (negative counts as 0)."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def rate(nbytes: int | float, seconds: float) -> str:
    """`350 MB/s` (`0 B/s` for no time)."""
    return f"{size(nbytes / seconds if seconds > 0 else 0)}/s"


def ago(moment: datetime, now: datetime | None = None) -> str:
    """`just now`, `42 s ago`, `3 min ago`, `5 h ago`, `2 days ago`; `in 3 min` ahead."""
    now = now or datetime.now(timezone.utc)
    seconds = (now - _aware(moment)).total_seconds()
    ahead = seconds < 0
    seconds = abs(seconds)
    if seconds < 5:
        return "just now"
    if seconds < 60:
        text = f"{int(seconds)} s"
    elif seconds < 3600:
        text = f"{int(seconds // 60)} min"
    elif seconds < 86400 * 2:
        text = f"{int(seconds // 3600)} h"
    else:
        text = f"{int(seconds // 86400)} days"
    return f"in {text}" if ahead else f"{text} ago"


def moment(when: datetime, now: datetime | None = None, *, relative: bool = True) -> str:
    """`2026-12-01 23:46:09 (3 min ago)`: local time to the second, and — within a week —
    how long ago (or how soon)."""
    local = _aware(when).astimezone()
    text = f"{local:%Y-%m-%d %H:%M:%S}"
    now = now or datetime.now(timezone.utc)
    if relative and abs((now - _aware(when)).total_seconds()) < 7 * 86400:
        text += f" ({ago(when, now)})"
    return text


def _aware(when: datetime) -> datetime:
    """A naive time is UTC (the center's answers always carry their zone)."""
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)
