"""`kaic login`, `kaic logout`, `kaic whoami`."""

import os
import sys
from typing import Annotated

import typer

from kaic.cli.context import debug_enabled, get_app
from kaic.cli.interrupt import prompt
from kaic.cli.options import JsonOpt, ProfileOpt
from kaic.errors import AuthRequired, UsageError
from kaic.text import visible


def register(app: typer.Typer) -> None:
    app.command("login")(login)
    app.command("logout")(logout)
    app.command("whoami")(whoami)


def _read_stdin_line(what: str) -> str:
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise UsageError(f"expected {what} on standard input, got nothing")
    return line


def _center_for_login(center: str | None, profile: str | None) -> str:
    from kaic.config import resolve_profile, validate_center_url

    center = center or os.environ.get("KAIC_CENTER")
    if center:
        return validate_center_url(center)
    prof = resolve_profile(profile)
    if prof is not None:
        return prof.center
    raise UsageError(
        "no center to log in to",
        hint="pass `--center https://host[:port]`; with no center configured kaic uses "
        "the local center, which needs no login",
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
    from kaic.flows import login as flows

    app = get_app(ctx)
    profile = profile or app.profile
    url = _center_for_login(center, profile)
    dbg = app.debug if debug_enabled() else None
    tls = flows.LoginTls(ca_bundle=ca_bundle, insecure_http=insecure_http)
    # Before a password is asked for or read: plain http refused, CA bundle unusable.
    flows.login_policy(url, profile=profile, tls=tls)
    if with_token:
        if password_stdin:
            raise UsageError("--with-token and --password-stdin both read standard input")
        token = _read_stdin_line("a token")
        result = flows.login_token(
            url,
            token,
            profile=profile,
            insecure_storage=insecure_storage,
            warn=app.warn,
            debug_log=dbg,
            tls=tls,
        )
    else:
        user = username or _profile_username(profile) or _prompt_username()
        if password_stdin:
            password = _read_stdin_line("a password")
        elif sys.stdin.isatty():
            import getpass

            password = getpass.getpass(f"Password for {user} at {url}: ")
        else:
            raise UsageError(
                "no terminal to ask for a password",
                hint="pipe it in with --password-stdin, or use --with-token with an API token",
            )
        try:
            result = flows.login_password(
                url,
                user,
                password,
                otp,
                profile=profile,
                insecure_storage=insecure_storage,
                warn=app.warn,
                debug_log=dbg,
                tls=tls,
            )
        except AuthRequired as err:
            if err.code == "otp_required" and otp is None and sys.stdin.isatty():
                code = prompt("One-time code", hide_input=True)
                result = flows.login_password(
                    url,
                    user,
                    password,
                    code,
                    profile=profile,
                    insecure_storage=insecure_storage,
                    warn=app.warn,
                    debug_log=dbg,
                    tls=tls,
                )
            else:
                if err.code == "otp_required":
                    err.hint = "pass your one-time code with --otp CODE"
                elif err.code in ("invalid_credentials", None):
                    err.hint = "check your user name and password"
                raise
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


def _profile_username(profile: str | None) -> str | None:
    from kaic.config import resolve_profile

    try:
        prof = resolve_profile(profile)
    except Exception:
        return None
    return prof.username if prof else None


def _prompt_username() -> str:
    if not sys.stdin.isatty():
        raise UsageError("no user name given", hint="pass --username NAME")
    return str(prompt("User name"))


def logout(ctx: typer.Context, profile: ProfileOpt = None) -> None:
    """Log out: revoke the session on the center and delete the stored credentials.

    Example: kaic logout --profile work
    """
    from kaic.flows import login as flows

    app = get_app(ctx)
    name = flows.logout(
        profile or app.profile, warn=app.warn, debug_log=app.debug if debug_enabled() else None
    )
    if name is None:
        app.info("Not logged in to any center (the local center needs no login).")
    else:
        app.info(f"Logged out of profile {visible(name)}.")


def whoami(ctx: typer.Context, json_out: JsonOpt = False, profile: ProfileOpt = None) -> None:
    """Show who you are on the center, and where your token comes from.

    Example: kaic whoami --json
    """
    app = get_app(ctx)
    if profile:
        app.profile = profile
    session = app.session()
    me = session.client.me()
    data = {
        "user": me.user,
        "unix_account": me.unix_account,
        "center": session.center_url,
        "profile": session.profile,
        "token_source": session.token_source,
        "expires_at": me.expires_at.isoformat() if me.expires_at else None,
        "projects": [p.name for p in me.projects],
    }
    if json_out:
        app.json(data)
        return
    width = max(len(k) for k in data)
    for key, value in data.items():
        shown = ", ".join(value) if isinstance(value, list) else ("-" if value is None else value)
        app.out(f"{key:<{width}}  {visible(shown)}")
