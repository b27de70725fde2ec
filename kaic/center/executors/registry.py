"""Executors by name: what `--executor NAME` builds, the settings it takes, and the
`kaic center serve` options that fill them.

Read by `kaic.center.settings` (is the name known; the executor's own settings),
`kaic.cli.center` (`serve`'s executor options and their checks) and `kaic.center.app`
(`build`). Importing it stays cheap — the CLI does on its start path — since an entry imports
its executor only when it builds one.

Adding an executor: its folder `executors/<name>/` (copy `executors/slurm/`), its entry in
`<name>/options.py` (copy `slurm/options.py`: settings, `serve` options, `build`), one line in
`ENTRIES` below, and the executor conformance suite (`tests/center/conformance/`) passing
against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kaic.center.executors.entry import ExecutorEntry, OptionError, ServeOption
from kaic.center.executors.slurm.options import ENTRY as SLURM

if TYPE_CHECKING:
    from kaic.center.executors.base import Executor
    from kaic.center.settings import CenterSettings

__all__ = ["ENTRIES", "ExecutorEntry", "OptionError", "ServeOption"]


def _build_local(settings: CenterSettings) -> Executor:
    from functools import partial

    from kaic.center.executors.local import LocalExecutor
    from kaic.center.executors.own_account import own_account_refusal

    return LocalExecutor(
        kill_grace=settings.kill_grace,
        run_as_users=settings.run_as_users,
        refusal=partial(own_account_refusal, settings),
    )


LOCAL = ExecutorEntry(name="local", label="local (this machine)", build=_build_local)

#: every executor, in the order `--executor`'s help names them
ENTRIES: tuple[ExecutorEntry, ...] = (LOCAL, SLURM)


def names() -> list[str]:
    return [entry.name for entry in ENTRIES]


def either(words: list[str]) -> str:
    """ "a", "a or b", "a, b or c"."""
    return ", ".join(words[:-1]) + (" or " if len(words) > 1 else "") + words[-1]


def entry(name: str) -> ExecutorEntry:
    """The entry of executor `name`; ValueError naming the known ones."""
    for candidate in ENTRIES:
        if candidate.name == name:
            return candidate
    raise ValueError(f"unknown executor {name!r} (available: {', '.join(names())})")


def serve_options() -> list[ServeOption]:
    """Every executor's `serve` options, in registry order."""
    return [option for candidate in ENTRIES for option in candidate.serve_options]


def settings_from_serve(
    name: str, values: Mapping[str, Any], environ: Mapping[str, str]
) -> object | None:
    """Executor `name`'s settings from `serve`'s executor options (`values`, by parameter
    name) and the environment. OptionError when they do not suit it, or when an option of
    another executor that needs its executor is given."""
    chosen = entry(name)
    settings = chosen.from_serve(values, environ) if chosen.from_serve is not None else None
    for other in ENTRIES:
        if other is chosen:
            continue
        for option in other.serve_options:
            if option.needs_executor and values.get(option.param, option.default) != (
                option.default
            ):
                raise OptionError(f"{option.decls[0]} needs --executor {other.name}")
    return settings


def build(settings: CenterSettings) -> Executor:
    """The executor `settings.executor` names."""
    return entry(settings.executor).build(settings)
