"""`kaic center start`, `kaic center stop`, `kaic center status`: the background local center
that commands start on demand when no center is configured (the root app adds these commands
to `kaic center`, after `serve` and `ssh-ca`)."""

import typer

from kaic.cli.context import get_app
from kaic.cli.options import JqOpt, JsonOpt
from kaic.text import visible

#: holds the commands only; `kaic.cli.main` adds them to `kaic center` (never a group itself)
local_app = typer.Typer()


@local_app.command("start")
def start(ctx: typer.Context, json_out: JsonOpt = False, jq: JqOpt = None) -> None:
    """Start the background local center (commands start it on demand anyway).

    Example: kaic center start
    """
    from kaic.flows.local_center import ensure_running

    app_ = get_app(ctx)
    center = ensure_running()
    data = {
        "running": True,
        "url": center.url,
        "pid": center.pid,
        "started": center.started,
        "state_dir": str(center.state_dir),
    }
    app_.emit(
        data,
        lambda: app_.info(
            f"Local center {'started' if center.started else 'already running'} at "
            f"{visible(center.url)} (pid {center.pid})."
        ),
    )


@local_app.command("stop")
def stop(ctx: typer.Context, json_out: JsonOpt = False, jq: JqOpt = None) -> None:
    """Stop the background local center.

    Example: kaic center stop
    """
    from kaic.flows.local_center import stop as stop_center

    app_ = get_app(ctx)
    pid = stop_center()
    app_.emit(
        {"stopped": pid is not None, "pid": pid},
        lambda: app_.info(
            "The local center was not running."
            if pid is None
            else f"Stopped the local center (pid {pid})."
        ),
    )


@local_app.command("status")
def status(ctx: typer.Context, json_out: JsonOpt = False, jq: JqOpt = None) -> None:
    """Say whether the background local center is running, and where.

    Example: kaic center status --json
    """
    from kaic.flows.local_center import find_running, local_state_dir

    app_ = get_app(ctx)
    center = find_running()
    data = {
        "running": center is not None,
        "url": center.url if center else None,
        "pid": center.pid if center else None,
        "state_dir": str(local_state_dir()),
    }

    def human() -> None:
        if center:
            app_.out(
                f"running at {visible(center.url)} (pid {center.pid}); "
                f"state in {visible(data['state_dir'])}"
            )
        else:
            app_.out(f"not running; state in {visible(data['state_dir'])}")

    app_.emit(data, human)
