"""kaic's entry point: the root Typer app, global options, and error rendering.

Imports only typer, stdlib and the light command modules: every heavy library (httpx,
pydantic, rich tables, fastapi, paramiko, keyring) is imported inside the function that needs it.
"""

import sys
from typing import IO, Annotated

import typer

from kaic import __version__
from kaic.cli import (
    auth,
    bench,
    center,
    center_admin,
    config_cmd,
    data,
    doctor,
    help_cmd,
    interactive,
    interrupt,
    jobs,
    resources,
    tokens,
)
from kaic.cli.context import AppContext, debug_enabled
from kaic.cli.options import ProfileOpt
from kaic.errors import ExitCode, Interrupted, KaicError
from kaic.text import visible, visible_lines

app = typer.Typer(
    name="kaic",
    help="kaic — use the National AI Computing Center from your laptop or CI.\n\n"
    "Log in once, stage data, submit and follow GPU jobs, validate your GPUs.\n"
    "With no center configured, kaic starts a local center on this machine.",
    epilog="Examples:  kaic login --center https://api.center.example  ·  kaic whoami  ·  "
    "kaic help exit-codes",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"kaic {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    profile: ProfileOpt = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    # `main` (and a test's `run_line`) hands in the context; an embedding caller may not.
    app_ctx = ctx.obj if isinstance(ctx.obj, AppContext) else AppContext()
    app_ctx.profile = profile
    ctx.obj = app_ctx
    ctx.call_on_close(app_ctx.close)


auth.register(app)
jobs.register(app)
interactive.register(app)
resources.register(app)
bench.register(app)
doctor.register(app)
app.add_typer(tokens.app, name="token")
app.add_typer(data.app, name="data")
center.app.add_typer(center_admin.user_app, name="user")
center.app.add_typer(center_admin.project_app, name="project")
app.add_typer(center.app, name="center")
app.add_typer(config_cmd.app, name="config")
app.add_typer(help_cmd.app, name="help")


def render_error(err: KaicError, stream: IO[str] | None = None) -> None:
    """`error: MESSAGE` and `hint: HINT` on stderr. Both may quote outside data (a center's
    message, a path), so every line is shown through `visible_lines`."""
    out = stream or sys.stderr
    message, hint = visible_lines(err.message), visible_lines(err.hint) if err.hint else None
    if isinstance(err, Interrupted):
        if out.isatty():  # start a line of its own (after ^C, or a prompt Ctrl-C cut short)
            print(file=out)
        print(message + (f" — {hint}" if hint else ""), file=out)
        return
    print(f"error: {message}", file=out)
    if hint:
        print(f"hint: {hint}", file=out)


def _print_traceback() -> None:
    if debug_enabled():
        import traceback

        traceback.print_exc()


def main() -> None:
    """Console-script entry point: run the app, map errors to CLI.md's exit codes."""
    if sys.argv[1:] == ["--version"]:
        # Answer without building the whole command tree (scripts call this in loops).
        print(f"kaic {__version__}")
        return
    interrupt.install()
    try:
        app(prog_name="kaic", obj=AppContext(argv=sys.argv[1:]))
    except SystemExit as exc:
        # Typer ends a command that Ctrl-C stopped with a silent exit 130 (a Click prompt's
        # Ctrl-C with "Aborted.", exit 1): say what happened, exit as a shell would.
        if interrupt.pressed() and exc.code not in (0, None):
            _print_traceback()
            render_error(Interrupted("interrupted"))
            sys.exit(int(ExitCode.INTERRUPTED))
        raise
    except KaicError as err:
        _print_traceback()
        render_error(err)
        sys.exit(int(err.exit_code))
    except KeyboardInterrupt:
        _print_traceback()
        render_error(Interrupted("interrupted"))
        sys.exit(int(ExitCode.INTERRUPTED))
    except Exception as exc:  # the last line of defence: no tracebacks unless KAIC_DEBUG=1
        _print_traceback()
        print(f"error: internal error: {type(exc).__name__}: {visible(exc)}", file=sys.stderr)
        print("hint: run again with KAIC_DEBUG=1 for details, and report it", file=sys.stderr)
        sys.exit(int(ExitCode.ERROR))
