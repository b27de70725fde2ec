"""`kaic doctor`: check config, reachability, auth, clock skew and credential storage."""

import typer

from kaic.cli.context import get_app
from kaic.cli.options import JqOpt, JsonOpt
from kaic.text import visible


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)


def doctor(ctx: typer.Context, json_out: JsonOpt = False, jq: JqOpt = None) -> None:
    """Check that kaic can work: config, center reachable, logged in, clock, keyring.

    Each check says ok / warn / fail with what to do; exits 1 if any check fails.

    Example: kaic doctor --json
    """
    from kaic.flows.doctor import run_checks

    app = get_app(ctx)
    checks = run_checks(app.profile, warn=lambda _msg: None, transport=app.transport)

    def human() -> None:
        for c in checks:
            app.out(f"{c.status:<5} {c.name:<12} {visible(c.detail)}")
            if c.hint and c.status != "ok":
                app.out(f"      {'':<12} → {visible(c.hint)}")

    app.emit([c.as_dict() for c in checks], human)
    if any(c.status == "fail" for c in checks):
        raise typer.Exit(1)
