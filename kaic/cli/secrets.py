"""`kaic secret set/list/rm`: secrets for jobs' environments (API keys), write-only."""

import sys
from collections.abc import Callable
from typing import Annotated

import typer

from kaic.cli.context import get_app
from kaic.cli.options import JqOpt, JsonOpt
from kaic.errors import UsageError
from kaic.text import visible

app = typer.Typer(
    help="Secrets for your jobs' environment (API keys): set, list, remove.",
    no_args_is_help=True,
)

NameArg = Annotated[
    str, typer.Argument(help="The secret's name, e.g. wandb (letters, digits, _ . -).")
]


def _reader(name: str, from_stdin: bool) -> Callable[[], str]:
    """How the value is read: all of standard input (`--stdin`), else a hidden prompt on
    the terminal; never from the command line."""

    def read_stdin() -> str:
        from kaic.flows.secrets import stdin_value

        return stdin_value(sys.stdin.read())

    def ask() -> str:
        import getpass

        if not sys.stdin.isatty():
            raise UsageError(
                "no terminal to ask for the value on",
                hint=f'pipe it in: `printf %s "$VALUE" | kaic secret set {name} --stdin`',
            )
        from kaic.cli.interrupt import pressed

        try:
            return getpass.getpass(f"Value of secret {name} (hidden): ")
        except (KeyboardInterrupt, EOFError):
            from kaic.errors import Interrupted

            if pressed():
                raise Interrupted("interrupted") from None
            raise UsageError("no value given") from None

    return read_stdin if from_stdin else ask


@app.command("set", context_settings={"allow_extra_args": True})
def set_(
    ctx: typer.Context,
    name: NameArg,
    from_stdin: Annotated[
        bool,
        typer.Option(
            "--stdin",
            help="Read the value from standard input (all of it, less one final newline) "
            "instead of a hidden prompt.",
        ),
    ] = False,
    json_out: JsonOpt = False,
    jq: JqOpt = None,
) -> None:
    """Set a secret (or replace it): asked for at a hidden prompt, or piped in with --stdin.

    The value is never a command-line argument, is stored encrypted on the center and is
    never shown again. A job gets it in its environment: `env: {WANDB_API_KEY: {secret:
    wandb}}` in a job file, or `kaic submit --secret WANDB_API_KEY=wandb`.

    Example: printf %s "$WANDB_API_KEY" | kaic secret set wandb --stdin
    """
    from kaic.flows.secrets import set_secret

    if ctx.args:
        # Not echoed: it is a value the user meant to keep secret.
        raise UsageError(
            "a secret's value is never given on the command line (shell history and every "
            "user's process list would show it); this one was not sent",
            hint=f"type it at the prompt (`kaic secret set {name}`) or pipe it in with --stdin",
        )
    app_ = get_app(ctx)
    info = set_secret(app_.session, name, _reader(name, from_stdin))
    app_.emit(
        info.model_dump(mode="json"),
        lambda: app_.info(
            f"Set secret {visible(info.name)}; jobs that start from now on get this value."
        ),
    )


@app.command("list")
def list_(ctx: typer.Context, json_out: JsonOpt = False, jq: JqOpt = None) -> None:
    """List your secrets: names and when they were set (never their values).

    Example: kaic secret list --json
    """
    from kaic.cli.render import table
    from kaic.flows.secrets import list_secrets

    app_ = get_app(ctx)
    secrets = list_secrets(app_.session())
    rows = [
        (s.name, f"{s.created_at:%Y-%m-%d %H:%M}", f"{s.updated_at:%Y-%m-%d %H:%M}")
        for s in secrets
    ]
    human = table(
        app_,
        ("NAME", "CREATED", "UPDATED"),
        rows,
        empty="No secrets. Set one with `kaic secret set NAME`.",
    )
    app_.emit([s.model_dump(mode="json") for s in secrets], human)


@app.command("rm")
def rm(ctx: typer.Context, name: NameArg, json_out: JsonOpt = False, jq: JqOpt = None) -> None:
    """Remove a secret. A job that names it and has not started yet fails to start.

    Example: kaic secret rm wandb
    """
    from kaic.flows.secrets import remove_secret

    app_ = get_app(ctx)
    remove_secret(app_.session, name)
    app_.emit(
        {"name": name, "removed": True},
        lambda: app_.info(f"Removed secret {visible(name)}."),
    )
