"""`kaic token create/list/revoke`: scoped, expiring API tokens for CI."""

import re
from typing import Annotated

import typer

from kaic.cli.context import get_app
from kaic.cli.options import JqOpt, JsonOpt
from kaic.errors import UsageError
from kaic.text import visible

app = typer.Typer(
    help="API tokens for CI: named, scoped, expiring; the secret is shown once.",
    no_args_is_help=True,
)

#: `kaic.models.SCOPES`, written out so the CLI starts without pydantic (a test keeps the
#: two the same)
VALID_SCOPES = (
    "jobs:read",
    "jobs:write",
    "files",
    "jobs:exec",
    "secrets:read",
    "secrets:write",
)
#: what a new token gets unless `--scope` says otherwise: everything but the secrets (a CI
#: token runs jobs; it need not learn which secrets exist or change them)
DEFAULT_SCOPES = ("jobs:read", "jobs:write", "files", "jobs:exec")


def parse_scopes(text: str) -> list[str]:
    scopes = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in scopes if s not in VALID_SCOPES]
    if bad or not scopes:
        raise UsageError(
            f"unknown scope {', '.join(bad) or '(none given)'}",
            hint=f"valid scopes: {', '.join(VALID_SCOPES)} (comma-separated)",
        )
    return scopes


def parse_days(text: str) -> int:
    """`30d`, `12w`, `1y` or a plain number of days."""
    m = re.fullmatch(r"\s*(\d+)\s*([dwy]?)\s*", text)
    if not m:
        raise UsageError(f"bad expiry {text!r}", hint="use e.g. 30d, 12w or 1y")
    n = int(m.group(1)) * {"": 1, "d": 1, "w": 7, "y": 365}[m.group(2)]
    if not 1 <= n <= 366:
        raise UsageError(f"expiry {text!r} out of range", hint="between 1d and 366d")
    return n


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A name to recognise the token by, e.g. ci-main.")],
    scope: Annotated[
        str,
        typer.Option(
            "--scope",
            help="Comma-separated scopes: jobs:read, jobs:write, files, jobs:exec "
            "(exec, shell and forward in running jobs), secrets:read (list your secrets' "
            "names), secrets:write (set and remove them). Default: all but the secrets ones.",
        ),
    ] = ",".join(DEFAULT_SCOPES),
    expires: Annotated[str, typer.Option("--expires", help="Lifetime: 30d, 12w, 1y.")] = "30d",
    json_out: JsonOpt = False,
    jq: JqOpt = None,
) -> None:
    """Create an API token; its secret is printed once, on stdout.

    Example: kaic token create ci-main --scope jobs:read,jobs:write --expires 90d
    """
    from kaic.flows.account import create_token

    app_ = get_app(ctx)
    scopes, days = parse_scopes(scope), parse_days(expires)
    created = create_token(app_.session(), name, scopes, days)

    def human() -> None:
        app_.info(
            f"Created token {visible(created.name)} ({visible(created.id)}; "
            f"scopes {visible(', '.join(created.scopes))}; "
            f"expires {created.expires_at:%Y-%m-%d}). Copy it now: it is not shown again."
        )
        app_.out(visible(created.token))

    app_.emit(created.model_dump(mode="json"), human)


@app.command("list")
def list_(ctx: typer.Context, json_out: JsonOpt = False, jq: JqOpt = None) -> None:
    """List your API tokens (never their secrets).

    Example: kaic token list --json
    """
    app_ = get_app(ctx)
    tokens = app_.session().tokens.all()
    from kaic.cli.render import table

    rows = [
        (
            t.id,
            t.name,
            ",".join(t.scopes),
            f"{t.expires_at:%Y-%m-%d}",
            f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never",
            "revoked" if t.revoked else "active",
        )
        for t in tokens
    ]
    human = table(
        app_,
        ("ID", "NAME", "SCOPES", "EXPIRES", "LAST USED", "STATUS"),
        rows,
        empty="No API tokens. Create one with `kaic token create NAME`.",
    )
    app_.emit([t.model_dump(mode="json") for t in tokens], human)


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(help="The token's id (from `kaic token list`).")],
    json_out: JsonOpt = False,
    jq: JqOpt = None,
) -> None:
    """Revoke an API token at once.

    Example: kaic token revoke tok_3f9a1c2d
    """
    app_ = get_app(ctx)
    app_.session().tokens.revoke(token_id)
    app_.emit(
        {"id": token_id, "revoked": True}, lambda: app_.info(f"Revoked token {visible(token_id)}.")
    )
