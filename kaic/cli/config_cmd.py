"""`kaic config show/use`: profiles, one per center/account."""

from typing import Annotated

import typer

from kaic.cli import complete
from kaic.cli.context import get_app
from kaic.cli.options import JqOpt, JsonOpt
from kaic.text import visible

app = typer.Typer(help="Show and switch profiles (one per center/account).", no_args_is_help=True)


@app.command("show")
def show(ctx: typer.Context, json_out: JsonOpt = False, jq: JqOpt = None) -> None:
    """Show the config file, the profiles and which one is current (never secrets).

    Example: kaic config show --json
    """
    from kaic.config import config_dir, config_path, load_config, state_dir
    from kaic.urls import display_url

    app_ = get_app(ctx)
    cfg = load_config()
    data = {
        "config_file": str(config_path()),
        "config_dir": str(config_dir()),
        "state_dir": str(state_dir()),
        "current_profile": cfg.current_profile,
        "profiles": [
            {
                "name": p.name,
                # A hand-edited URL may carry a password: never shown.
                "center": display_url(p.center),
                "username": p.username,
                "credential_store": p.credential_store,
                "ca_bundle": p.ca_bundle,
                "insecure_http": p.insecure_http,
            }
            for p in cfg.profiles.values()
        ],
    }

    def human() -> None:
        app_.out(f"config file: {visible(data['config_file'])}")
        if not cfg.profiles:
            app_.out("no profiles: kaic uses the local center (`kaic login --center URL` adds one)")
            return
        for p in cfg.profiles.values():
            mark = "*" if p.name == cfg.current_profile else " "
            tls = f"  ca_bundle={visible(p.ca_bundle)}" if p.ca_bundle else ""
            tls += "  INSECURE-HTTP" if p.insecure_http else ""
            app_.out(
                f"{mark} {visible(p.name):<16} {visible(display_url(p.center))}  "
                f"user={visible(p.username)}  store={visible(p.credential_store)}{tls}"
            )

    app_.emit(data, human)


@app.command("use")
def use(
    ctx: typer.Context,
    profile: Annotated[
        str, typer.Argument(help="Profile to make current.", autocompletion=complete.profiles)
    ],
    json_out: JsonOpt = False,
    jq: JqOpt = None,
) -> None:
    """Make PROFILE the current profile.

    Example: kaic config use work
    """
    from kaic.config import use_profile

    app_ = get_app(ctx)
    use_profile(profile)
    app_.emit(
        {"current_profile": profile}, lambda: app_.info(f"Now using profile {visible(profile)}.")
    )
