"""How `--help` names the value an option takes: `--gpus N`, `--time TIME`, `--stream
stdout|stderr|both` — never Python's types (`<str>`, `<list[str]>`, `<int range>`), which mean
nothing to someone typing a command.

Typer (0.2x) prints each parameter's Python annotation; `install` replaces the two methods
that make that label, for every command kaic builds: an option gets a metavar in the
argparse style (its long name upper-cased; `N` for a count; `PATH` for a path; a choice's
values as they are typed), an argument nothing (its name already says what it is). An
option declared with its own `metavar=` keeps it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.core import TyperArgument, TyperOption

_installed = False

#: options whose value has a better name than their own (by long name, without dashes)
NAMED = {
    "time": "DURATION",
    "timeout": "DURATION",
    "expires": "DURATION",
    "interval": "DURATION",
    "env": "K=V",
    "after": "JOB",
    "exclude": "PATTERN",
    "scope": "SCOPES",
    "state-dir": "DIR",
    "workdir": "DIR",
}


def option_metavar(option: Any, ctx: Any) -> str | None:
    """The label of an option's value in `--help` (None for a flag: it takes none)."""
    if option.metavar is not None:
        return str(option.metavar)
    if getattr(option, "is_flag", False) or getattr(option, "count", False):
        return None
    desc = option.type_descriptor
    if desc.is_choice:
        return "|".join(str(c) for c in desc.choices or ())
    annotation = desc.annotation
    inner = getattr(annotation, "__args__", None)
    element = inner[0] if desc.is_list and inner else annotation
    if element is int:
        return "N"
    if element is float:
        return "NUMBER"
    if desc.is_path or element is Path:
        return "PATH"
    longest = max(option.opts, key=len).lstrip("-")
    return NAMED.get(longest, longest.upper().replace("-", "_"))


def _argument_type(_argument: Any, ctx: Any) -> str | None:
    return None


def install() -> None:
    """Use kaic's labels in every `--help` from now on (idempotent)."""
    global _installed
    if _installed:
        return
    TyperOption.display_type_rich = option_metavar  # type: ignore[method-assign,assignment]
    TyperArgument.display_type_rich = _argument_type  # type: ignore[method-assign,assignment]
    _installed = True
