"""Durations as users type them (`--time 4h`, `time_limit: 1-12:00:00`, `--timeout 30m`).

Stdlib only: the CLI imports this on paths that must start fast.

Accepted forms (see `parse_duration`):

* units, largest first, each at most once: ``90s``, ``30m``, ``4h``, ``2d``, ``1h30m``,
  ``1d12h``, ``2h 15m`` (case-insensitive, spaces between parts allowed);
* a bare whole number: minutes, as Slurm reads ``--time=30``;
* Slurm's forms: ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``
  (``1-12:00:00`` is 36 hours). The leading field may be as large as you like (``90:00`` is
  90 minutes); the fields after it must be below 60 (minutes, seconds) or 24 (hours after
  ``D-``).

`format_duration` writes the compact unit form (``4h``, ``1d12h``, ``1h30m``, ``45s``), which
`parse_duration` reads back to the same number of seconds.
"""

from __future__ import annotations

import re

__all__ = ["ACCEPTED_FORMS", "format_duration", "parse_duration"]

ACCEPTED_FORMS = (
    "90s, 30m, 4h, 2d, 1h30m, a bare number of minutes (30), "
    "or Slurm's MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS (1-12:00:00 = 36h)"
)

_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_UNITS_RE = re.compile(
    r"^(?:(?P<d>\d+)\s*d)?\s*(?:(?P<h>\d+)\s*h)?\s*(?:(?P<m>\d+)\s*m)?\s*(?:(?P<s>\d+)\s*s)?$",
    re.IGNORECASE | re.ASCII,
)
_DIGITS_RE = re.compile(r"^\d+$", re.ASCII)
_CLOCK_RE = re.compile(r"^\d+(?::\d+){1,2}$", re.ASCII)  # MM:SS or HH:MM:SS
_DAYS_RE = re.compile(r"^(?P<days>\d+)-(?P<rest>\d+(?::\d+){0,2})$", re.ASCII)  # D-HH[:MM[:SS]]


def _invalid(text: str, why: str | None = None) -> ValueError:
    reason = f" ({why})" if why else ""
    return ValueError(f"not a valid duration {text!r}{reason}; use {ACCEPTED_FORMS}")


def _clock(text: str, fields: list[str], units: list[int], limits: list[int | None]) -> int:
    """Seconds from clock fields; `limits[i]` caps field i (None: no cap, the leading one)."""
    total = 0
    for value, unit, limit, label in zip(fields, units, limits, _labels(units), strict=True):
        number = int(value)
        if limit is not None and number >= limit:
            raise _invalid(text, f"{label} must be below {limit}")
        total += number * unit
    return total


def _labels(units: list[int]) -> list[str]:
    names = {86400: "days", 3600: "hours", 60: "minutes", 1: "seconds"}
    return [names[u] for u in units]


def parse_duration(text: str) -> int:
    """Seconds in `text`; raises ValueError (naming the accepted forms) if it is not one.

    A bare number is minutes (Slurm's convention). Zero and negative durations are rejected.
    """
    raw = text
    text = text.strip()
    if not text:
        raise _invalid(raw, "empty")
    if text.startswith(("-", "+")):
        if text.startswith("-"):
            raise ValueError(f"duration must be positive (got {raw!r}); use {ACCEPTED_FORMS}")
        raise _invalid(raw)
    seconds: int
    if _DIGITS_RE.match(text):
        seconds = int(text) * 60
    elif _CLOCK_RE.match(text):
        fields = text.split(":")
        if len(fields) == 2:  # MM:SS
            seconds = _clock(raw, fields, [60, 1], [None, 60])
        else:  # HH:MM:SS
            seconds = _clock(raw, fields, [3600, 60, 1], [None, 60, 60])
    elif match := _DAYS_RE.match(text):
        fields = [match["days"], *match["rest"].split(":")]
        units = [86400, 3600, 60, 1][: len(fields)]
        seconds = _clock(raw, fields, units, [None, 24, 60, 60][: len(fields)])
    else:
        unit_match = _UNITS_RE.match(text)
        if unit_match is None or not any(unit_match.groupdict().values()):
            raise _invalid(raw)
        seconds = sum(
            int(value) * _UNIT_SECONDS[unit]
            for unit, value in unit_match.groupdict().items()
            if value is not None
        )
    if seconds <= 0:
        raise ValueError(f"duration must be positive (got {raw!r}); use {ACCEPTED_FORMS}")
    return seconds


def format_duration(seconds: int | float) -> str:
    """A compact, exact rendering: ``4h``, ``1d12h``, ``1h30m``, ``45s``, ``0s``.

    Units run largest first and zero parts are left out; `parse_duration` reads the result
    back to the same number of seconds. Fractions of a second are dropped; negative values
    are shown with a leading ``-``.
    """
    total = int(seconds)
    if total == 0:
        return "0s"
    sign = "-" if total < 0 else ""
    remaining = abs(total)
    parts: list[str] = []
    for unit, size in _UNIT_SECONDS.items():
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)
