"""`kaic login`, `kaic logout`, `kaic whoami`."""

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from kaic.cli.context import get_app
from kaic.cli.interrupt import prompt
from kaic.cli.options import JqOpt, JsonOpt, ProfileOpt
from kaic.errors import UsageError
from kaic.text import visible

if TYPE_CHECKING:
    from kaic.flows.login import Prompts


def register(app: typer.Typer) -> None:
    app.command("login")(login)
    app.command("logout")(logout)
    app.command("whoami")(whoami)


def _read_stdin_line(what: str) -> str:
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise UsageError(f"expected {what} on standard input, got nothing")
    return line


def _prompts() -> "Prompts":
    """What the login may ask at a terminal (nothing when standard input is none)."""
    import getpass

    from kaic.flows.login import Prompts

    if not sys.stdin.isatty():
        return Prompts(read_stdin=_read_stdin_line)
    return Prompts(
        read_stdin=_read_stdin_line,
        username=lambda: str(prompt("User name")),
        password=getpass.getpass,
        otp=lambda: str(prompt("One-time code", hide_input=True)),
    )


def login(
    ctx: typer.Context,
    center: Annotated[
        str | None, typer.Option("--center", help="Center URL, e.g. https://api.center.example")
    ] = None,
    username: Annotated[
        str | None, typer.Option("--username", "-u", help="Your user name.")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    otp: Annotated[
        str | None, typer.Option("--otp", help="One-time code (TOTP) if your account has one.")
    ] = None,
    with_token: Annotated[
        bool,
        typer.Option("--with-token", help="Read an API token (kaic_…) from standard input."),
    ] = False,
    insecure_storage: Annotated[
        bool,
        typer.Option(
            "--insecure-storage",
            help="Store credentials in a 0600 file instead of the system keyring.",
        ),
    ] = False,
    ca_bundle: Annotated[
        str | None,
        typer.Option(
            "--ca-bundle",
            metavar="FILE",
            help="PEM file of the CA certificates to trust for this center (a private CA); "
            "stored in the profile. KAIC_CA_BUNDLE overrides it; SSL_CERT_FILE also works.",
        ),
    ] = None,
    insecure_http: Annotated[
        bool,
        typer.Option(
            "--insecure-http",
            help="DANGEROUS: allow plain http to a center that is not on this machine "
            "(passwords and tokens travel unencrypted). Stored in the profile; every command "
            "then warns. KAIC_INSECURE_HTTP=1 does the same for one command.",
        ),
    ] = False,
    profile: ProfileOpt = None,
) -> None:
    """Log in to a center and store the credentials in a profile.

    TLS is verified; a center with a private CA needs --ca-bundle. Plain http is refused
    unless the center is on this machine (loopback).

    Examples:

      kaic login --center https://api.center.example -u alice

      echo "$PASSWORD" | kaic login --center https://api.center.example -u alice --password-stdin

      echo "$KAIC_API_TOKEN" | kaic login --center https://api.center.example --with-token

      kaic login --center https://center.lab.example --ca-bundle ~/lab-ca.pem -u alice
    """
    from kaic.flows.login import LoginRequest, LoginTls
    from kaic.flows.login import login as log_in

    app = get_app(ctx)
    request = LoginRequest(
        center=center,
        username=username,
        otp=otp,
        profile=profile or app.profile,
        with_token=with_token,
        password_stdin=password_stdin,
        insecure_storage=insecure_storage,
        tls=LoginTls(ca_bundle=ca_bundle, insecure_http=insecure_http),
    )
    result = log_in(request, _prompts(), app.ui(), transport=app.transport)
    app.info(
        f"Logged in to {visible(result.center)} as {visible(result.user)} "
        f"(profile {visible(result.profile)}; "
        f"credentials in {'the system keyring' if result.storage == 'keyring' else 'a 0600 file'})"
    )
    if result.ssh_identity is not None:
        identity = result.ssh_identity
        app.info(
            f"SSH certificate for data staging as {visible(identity.principal)}, valid until "
            f"{identity.valid_before:%Y-%m-%d %H:%M} UTC."
        )


def logout(ctx: typer.Context, profile: ProfileOpt = None) -> None:
    """Log out: revoke the session on the center and delete the stored credentials.

    Example: kaic logout --profile work
    """
    from kaic.flows.login import logout as log_out

    app = get_app(ctx)
    ui = app.ui()
    name = log_out(
        profile or app.profile, warn=ui.warn, debug_log=ui.debug, transport=app.transport
    )
    if name is None:
        app.info("Not logged in to any center (the local center needs no login).")
    else:
        app.info(f"Logged out of profile {visible(name)}.")


def whoami(
    ctx: typer.Context, json_out: JsonOpt = False, jq: JqOpt = None, profile: ProfileOpt = None
) -> None:
    """Show who you are on the center, and where your token comes from.

    Example: kaic whoami --json
    """
    from kaic.flows.account import whoami as who

    app = get_app(ctx)
    if profile:
        app.profile = profile
    data = who(app.session())

    def human() -> None:
        width = max(len(k) for k in data)
        for key, value in data.items():
            shown = (
                ", ".join(value) if isinstance(value, list) else ("-" if value is None else value)
            )
            app.out(f"{key:<{width}}  {visible(shown)}")

    app.emit(data, human)
