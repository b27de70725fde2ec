"""Options shared by several commands, as Annotated aliases (one definition each).

`--json` and `--jq` set the output sink's choice (`AppContext.output`) as they are parsed:
a command declares them and never looks at them again.
"""

from pathlib import Path
from typing import Annotated

import typer

from kaic.cli import complete
from kaic.cli.context import get_app


def _json_chosen(ctx: typer.Context, value: bool) -> bool:
    if value:
        get_app(ctx).output.json = True
    return value


def _jq_chosen(ctx: typer.Context, value: str | None) -> str | None:
    if value is not None:
        from kaic.cli.jq import parse_jq

        parse_jq(value)  # a typo is a usage error before the command does anything
        output = get_app(ctx).output
        output.json, output.jq = True, value
    return value


JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print one JSON document on stdout and nothing else there.",
        callback=_json_chosen,
    ),
]
JqOpt = Annotated[
    str | None,
    typer.Option(
        "--jq",
        metavar="EXPR",
        help="Print what the jq program EXPR makes of the JSON document (implies --json; "
        "strings print raw), e.g. '.[] | select(.state == \"FAILED\") | .id'.",
        callback=_jq_chosen,
        show_default=False,
    ),
]
CancelOnInterruptOpt = Annotated[
    bool,
    typer.Option(
        "--cancel-on-interrupt",
        help="Ctrl-C cancels the job instead of leaving it running (as srun does).",
    ),
]
ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--profile",
        "-p",
        envvar="KAIC_PROFILE",
        help="Profile (center + account) to use; default: the current profile.",
        show_envvar=True,
        autocompletion=complete.profiles,
    ),
]
StateDirOpt = Annotated[
    str | None,
    typer.Option(
        "--state-dir",
        help="Center state directory (database, logs); default: the local center's, "
        "under KAIC_STATE_DIR.",
    ),
]


def state_dir_path(value: str | None) -> Path:
    """The state dir `--state-dir` names, made absolute here, once: jobs run in their own
    directories, where a relative state dir (the README's `./center`) would point elsewhere
    (every job failed with 127, its script not found). Default: the local center's."""
    import os

    from kaic.flows.local_center import local_state_dir

    return Path(os.path.abspath(Path(value).expanduser())) if value else local_state_dir()
