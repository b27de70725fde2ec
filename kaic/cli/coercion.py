"""Option values that are plainly valid are taken without pydantic; any other goes through
Typer's own coercion, so what a command gets, and every error a user sees, stay Typer's.

Typer (0.29) coerces each parameter's value with a pydantic `TypeAdapter`, built on first
use. Importing pydantic for that costs ~65 ms of every command's start (`python -X
importtime`), and each adapter ~1 ms more — a tenth of a one-file `kaic data push`, which
otherwise never imports pydantic. `install` makes Typer build, for the annotations kaic's
options use (str, int and float with their bounds, bool, lists of str), a parameter that
takes a value it can see is valid as Typer would (a `str`; an `int` or `float` given as
one, or as plain decimal digits, within its bounds) and hands every other value — one that
may be an error, or may parse in a way only pydantic knows — to Typer's own adapter, built
then. Other annotations (paths, choices, files) get Typer's coercion as before.
`tests/cli/test_coercion.py` checks the shortcut against Typer's coercion value by value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from typer import core as typer_core
from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param

#: plain decimal numbers: what the shortcut parses; anything else is left to pydantic
_INT = re.compile(r"-?[0-9]{1,18}")
_FLOAT = re.compile(r"-?[0-9]{1,15}(\.[0-9]{1,15})?")

#: `quick` could not decide: the value goes to Typer's coercion
UNDECIDED = object()

_installed = False


def quick(annotation: Any, info: Any, value: Any) -> Any:
    """`value` as Typer would make it of `annotation`, or `UNDECIDED`."""
    if annotation is str:
        return value if isinstance(value, str) else UNDECIDED
    if annotation is bool:
        return value if isinstance(value, bool) else UNDECIDED
    if annotation == list[str]:
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value)
        return UNDECIDED
    if annotation is int or annotation is float:
        if info.parser is not None or info.clamp:
            return UNDECIDED
        plain = type(value) is int or (annotation is float and type(value) is float)
        if not plain and not (
            isinstance(value, str) and (_INT if annotation is int else _FLOAT).fullmatch(value)
        ):
            return UNDECIDED
        number = annotation(value)
        if (info.min is not None and number < info.min) or (
            info.max is not None and number > info.max
        ):
            return UNDECIDED  # (pydantic says why)
        return number
    return UNDECIDED


@dataclass(frozen=True)
class QuickParam(RuntimeParam):
    """A parameter's coercion: `quick` first, Typer's (made when first needed) for the rest."""

    descriptor: TypeDescriptor

    @cached_property
    def slow(self) -> RuntimeParam:
        return build_runtime_param(self.descriptor)

    def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
        got = quick(self.annotation, self.parameter_info, value)
        if got is not UNDECIDED:
            return got
        return self.slow._coerce_value(value, param=param, ctx=ctx)


def build(descriptor: TypeDescriptor) -> RuntimeParam:
    """What Typer calls to make a parameter's coercion (see the module docstring)."""
    if descriptor.file_annotation is not None or descriptor.annotation not in (
        str,
        bool,
        int,
        float,
        list[str],
    ):
        return build_runtime_param(descriptor)
    return QuickParam(
        parameter_info=descriptor.parameter_info,
        annotation=descriptor.annotation,
        descriptor=descriptor,
    )


def install() -> None:
    """Coerce every command's values this way from now on (idempotent)."""
    global _installed
    if not _installed and getattr(typer_core, "build_runtime_param", None) is build_runtime_param:
        typer_core.build_runtime_param = build
    _installed = True
