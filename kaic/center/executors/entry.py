"""What the registry knows about one executor (see `registry`): its name, how to build it, its
own settings and the `kaic center serve` options that fill them.

Imports nothing heavy: the CLI reads the entries on its start path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kaic.center.executors.base import Executor
    from kaic.center.settings import CenterSettings


class OptionError(ValueError):
    """A `serve` option (or the environment) does not suit the chosen executor; `hint` says
    what would."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class ServeOption:
    """One `kaic center serve` option of an executor (a Typer option, declared as data)."""

    #: the parameter's name: `from_serve` gets the option's value under it
    param: str
    #: the option's names, as Typer takes them ("--slurm-account/--no-slurm-account")
    decls: tuple[str, ...]
    #: its type (`str | None`, `float`, `bool`) and default
    type: Any
    default: Any
    help: str
    #: given while another executor is chosen, it is a usage error ("--slurmrestd needs
    #: --executor slurm"); otherwise it is ignored then
    needs_executor: bool = False


@dataclass(frozen=True)
class ExecutorEntry:
    """One executor in the registry."""

    name: str
    #: how `serve --executor`'s help names it ("local (this machine)")
    label: str
    #: the executor for a center's settings (imports the executor's modules only when called);
    #: raises ValueError when the settings cannot make one
    build: Callable[[CenterSettings], Executor]
    #: the executor's own settings, a dataclass (`CenterSettings.executor_settings`); None if
    #: it has none
    settings_type: type | None = None
    #: the `serve` options that fill those settings
    serve_options: tuple[ServeOption, ...] = ()
    #: the executor's settings from those options' values (by `param`) and the environment;
    #: raises OptionError
    from_serve: Callable[[Mapping[str, Any], Mapping[str, str]], object] | None = None
    #: why `--run-as-user` (the center runs each job as its user's account) does not apply;
    #: None: it does
    run_as_user_refusal: str | None = None

    def settings(self, given: object | None) -> object | None:
        """`given` checked to be this executor's settings, or its defaults when None."""
        if self.settings_type is None:
            if given is not None:
                raise ValueError(f"the {self.name} executor takes no settings of its own")
            return None
        if given is None:
            return self.settings_type()
        if not isinstance(given, self.settings_type):
            raise ValueError(
                f"the {self.name} executor's settings must be a {self.settings_type.__name__}"
            )
        return given
