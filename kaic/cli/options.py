"""Options shared by several commands, as Annotated aliases (one definition each)."""

from typing import Annotated

import typer

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else there.")
]
ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--profile",
        "-p",
        envvar="KAIC_PROFILE",
        help="Profile (center + account) to use; default: the current profile.",
        show_envvar=True,
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
