"""`kaic center user add`, `kaic center project add`: a center's administration, on its state
dir (the root app adds these groups to `kaic center`)."""

import sys
from typing import Annotated

import typer

from kaic.cli.context import get_app
from kaic.cli.options import JqOpt, JsonOpt, StateDirOpt, state_dir_path
from kaic.errors import KaicError, UsageError
from kaic.text import visible

user_app = typer.Typer(help="Manage center users (works on the state dir).", no_args_is_help=True)
project_app = typer.Typer(help="Manage projects and their GPU-hour grants.", no_args_is_help=True)


def _read_new_password(password_stdin: bool) -> str | None:
    """The new user's password: asked for twice with echo off at a terminal (with or
    without --password-stdin: a password typed at a terminal is never echoed), else read
    from standard input with --password-stdin; None (no password) otherwise."""
    if sys.stdin.isatty():
        first = _ask_hidden("New password: ")
        if first != _ask_hidden("Repeat it: "):
            raise UsageError("the passwords differ", hint="run the command again")
        if password_stdin and not first:
            raise UsageError("expected a password, got nothing")
        return first or None
    if password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise UsageError("expected a password on standard input, got nothing")
        return line
    return None


def _ask_hidden(prompt: str) -> str:
    """getpass, but never its fallback that reads with echo on (it only warns)."""
    import getpass
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", getpass.GetPassWarning)
        try:
            return getpass.getpass(prompt)
        except getpass.GetPassWarning:
            raise UsageError(
                "cannot turn off echo on this terminal to ask for a password",
                hint='pipe the password in: echo "$PW" | kaic center user add NAME '
                "--password-stdin",
            ) from None


@user_app.command("add")
def user_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="User name (lowercase, like a unix account).")],
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the password from standard input (at a terminal: asked for, hidden).",
        ),
    ] = False,
    otp: Annotated[bool, typer.Option("--otp", help="Enable a TOTP second factor.")] = False,
    unix_account: Annotated[
        str | None,
        typer.Option(
            "--unix-account", help="Unix account on the cluster (default: NAME; never root)."
        ),
    ] = None,
    shared_account: Annotated[
        bool,
        typer.Option(
            "--shared-account",
            help="Allow a unix account another user already has (they can then read and "
            "change each other's files and jobs).",
        ),
    ] = False,
    state_dir: StateDirOpt = None,
    json_out: JsonOpt = False,
    jq: JqOpt = None,
) -> None:
    """Add a user to a center's database.

    Each user gets a unix account of their own; root is refused.

    Example: echo "$PW" | kaic center user add alice --password-stdin --otp --state-dir ./state
    """
    from kaic.center.admin import AdminError, add_user

    app_ = get_app(ctx)
    password = _read_new_password(password_stdin)
    try:
        uri = add_user(
            state_dir_path(state_dir),
            name,
            password=password,
            enable_otp=otp,
            unix_account=unix_account,
            shared_account=shared_account,
            warn=app_.warn,
        )
    except AdminError as exc:
        raise KaicError(str(exc)) from exc

    def human() -> None:
        app_.info(f"Added user {visible(name)}.")
        if uri:
            app_.info("Give the user this TOTP secret (add it to an authenticator app):")
            app_.out(uri)

    app_.emit({"user": name, "unix_account": unix_account or name, "otpauth_uri": uri}, human)


@project_app.command("add")
def project_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Project (allocation) name, e.g. ai-2026-0042.")],
    gpu_hours: Annotated[float, typer.Option("--gpu-hours", help="GPU-hours granted.")],
    member: Annotated[
        list[str] | None, typer.Option("--member", help="A member user (repeatable).")
    ] = None,
    state_dir: StateDirOpt = None,
    json_out: JsonOpt = False,
    jq: JqOpt = None,
) -> None:
    """Add (or update) a project with a GPU-hour grant and members.

    Example: kaic center project add ai-2026-0042 --gpu-hours 5000 --member alice --member bob
    """
    from kaic.center.admin import AdminError, add_project

    app_ = get_app(ctx)
    if gpu_hours < 0:
        raise UsageError("--gpu-hours must be >= 0")
    try:
        add_project(state_dir_path(state_dir), name, gpu_hours=gpu_hours, members=member or [])
    except AdminError as exc:
        raise KaicError(str(exc)) from exc
    app_.emit(
        {"project": name, "gpu_hours": gpu_hours, "members": member or []},
        lambda: app_.info(
            f"Project {visible(name)}: {gpu_hours:g} GPU-hours; members: "
            f"{visible(', '.join(member or [])) or '(none)'}."
        ),
    )
