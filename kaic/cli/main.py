"""kaic's entry point: the root Typer app, global options, the table of commands, and error
rendering.

Starting fast. `kaic --version` is answered before this module is imported
(`kaic.__main__`, the console script). Any other run builds the root app with only what
it needs (`build_app`): the command module the command line names (`COMMANDS`), or — to
list the commands (`kaic`, `kaic --help`, a mistyped command) — stand-ins carrying each
command's name and one-line help, importing no command module. Only shell completion builds
the whole tree. Help is plain text (`rich_markup_mode=None`): Typer's Rich help imports
Rich and Markdown first, which costs more than importing Typer itself. Command modules
import every heavy library (httpx, pydantic, rich tables, paramiko) inside their commands.

A new command module (say `kaic/cli/interactive.py` with `exec` and `shell`) fits by:
defining `register(app)` that adds its commands to the root app (`app.command("exec")(…)`)
— or a Typer group `app` added under its one name —, and adding one line per top-level
command to `COMMANDS`: the name, the module, and the command's one-line help exactly as its
docstring's first paragraph says (`tests/unit/test_fast_start.py` checks the table against
the real commands).
"""

import importlib
import inspect
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import IO, TYPE_CHECKING, Annotated

import typer

from kaic import __version__
from kaic.cli import interrupt
from kaic.cli.context import AppContext, debug_enabled
from kaic.cli.options import ProfileOpt
from kaic.errors import ExitCode, Interrupted, KaicError
from kaic.text import visible, visible_lines

if TYPE_CHECKING:
    #: the root app with every command (`from kaic.cli.main import app`: built on first use)
    app: typer.Typer


@dataclass(frozen=True)
class Command:
    """A top-level command: the `kaic.cli` module that defines it, and its one-line help."""

    module: str
    summary: str
    #: groups nested into this one's Typer group: (name, module, attribute)
    nested: tuple[tuple[str, str, str], ...] = ()
    #: commands of other modules joined to this one's Typer group, after its own: (module,
    #: attribute), a Typer that only holds them
    joined: tuple[tuple[str, str], ...] = ()


#: Every top-level command, in the order `kaic --help` lists them.
COMMANDS: dict[str, Command] = {
    "login": Command("auth", "Log in to a center and store the credentials in a profile."),
    "logout": Command(
        "auth", "Log out: revoke the session on the center and delete the stored credentials."
    ),
    "whoami": Command("auth", "Show who you are on the center, and where your token comes from."),
    "submit": Command("submit", "Submit a job; prints its id alone on stdout."),
    "jobs": Command("jobs", "List your jobs, newest first."),
    "show": Command("jobs", "Show one job, with its event timeline."),
    "logs": Command(
        "jobs", "Print a job's output. Job stdout goes to stdout, job stderr to stderr."
    ),
    "wait": Command(
        "jobs",
        "Wait for jobs to end; exit 0 if all completed, else the code of the first that did not.",
    ),
    "cancel": Command(
        "jobs", "Cancel jobs (pending ones at once; running ones get SIGTERM, then SIGKILL)."
    ),
    "exec": Command("interactive", "Run a command inside a running job; exit with its exit code."),
    "shell": Command(
        "interactive",
        "Open an interactive shell inside a running job; exit with the shell's exit code.",
    ),
    "alloc": Command(
        "interactive",
        "Allocate GPUs interactively (like salloc), then open a shell in the allocation.",
    ),
    "forward": Command(
        "interactive", "Forward ports of a running job to this machine (127.0.0.1 only)."
    ),
    "top": Command(
        "metrics", "Show your running jobs live: GPU utilisation, memory, power, CPU and RSS."
    ),
    "stats": Command(
        "metrics",
        "Show one job's GPUs over its life: utilisation, memory, power, sparkline; CPU, RSS.",
    ),
    "resources": Command(
        "resources", "Show partitions: GPU type, total and free GPUs, max time, queue depth."
    ),
    "usage": Command(
        "resources", "Show your projects' GPU-hour allocations: granted, used, remaining."
    ),
    "images": Command(
        "resources", "Show the container images the center offers: name, tag, size, contents."
    ),
    "bench": Command(
        "bench",
        "Validate the GPUs of this node: health through NVML, then benchmarks against spec.",
    ),
    "doctor": Command(
        "doctor", "Check that kaic can work: config, center reachable, logged in, clock, keyring."
    ),
    "token": Command(
        "tokens", "API tokens for CI: named, scoped, expiring; the secret is shown once."
    ),
    "secret": Command(
        "secrets", "Secrets for your jobs' environment (API keys): set, list, remove."
    ),
    "data": Command(
        "data", "Stage data to and from center storage (SFTP; resumable, sha256-verified)."
    ),
    "center": Command(
        "center",
        "The reference center: serve it, manage the background local center, add users.",
        nested=(("user", "center_admin", "user_app"), ("project", "center_admin", "project_app")),
        joined=(("center_local", "local_app"),),
    ),
    "config": Command("config_cmd", "Show and switch profiles (one per center/account)."),
    "help": Command("help_cmd", "Reference topics (`kaic help exit-codes`, `kaic help jobfile`)."),
}


def _version(value: bool) -> None:
    if value:
        print(f"kaic {__version__}")
        raise typer.Exit()


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


def build_app(commands: Iterable[str] | None = None, *, listing: bool = False) -> typer.Typer:
    """The root app with the named top-level commands (all of them by default); with
    `listing`, every command as a stand-in that only names itself (for the list in `--help`)."""
    from kaic.cli import coercion, help_format

    help_format.install()
    coercion.install()
    root_app = typer.Typer(
        name="kaic",
        help="kaic — use the National AI Computing Center from your laptop or CI.\n\n"
        "Log in once, stage data, submit and follow GPU jobs, validate your GPUs.\n"
        "With no center configured, kaic starts a local center on this machine.",
        epilog="Examples:  kaic login --center https://api.center.example  ·  kaic whoami  ·  "
        "kaic help exit-codes",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    root_app.callback()(root)
    if listing:
        for name, command in COMMANDS.items():
            root_app.command(name, help=command.summary, add_help_option=False)(_stand_in)
        return root_app
    wanted = COMMANDS if commands is None else {n: COMMANDS[n] for n in commands}
    modules = dict.fromkeys(c.module for c in wanted.values())
    for module in modules:
        _add_module(root_app, module)
    _keep_examples(root_app)
    return root_app


def _keep_examples(app: typer.Typer) -> None:
    """Plain help is Click's, which rewraps every paragraph to the terminal's width: an
    example command broken over two lines cannot be copied. The indented paragraphs of a
    command's docstring (its examples) and its `Example:` lines get Click's no-rewrap mark
    (a line holding only `\\b`)."""
    for info in app.registered_commands:
        doc = info.callback.__doc__ if info.callback is not None else None
        if doc and "\b" not in doc:
            paragraphs = inspect.cleandoc(doc).split("\n\n")
            info.callback.__doc__ = "\n\n".join(
                "\b\n" + p if p.startswith((" ", "Example")) else p for p in paragraphs
            )
    for group in app.registered_groups:
        if group.typer_instance is not None:
            _keep_examples(group.typer_instance)


def _stand_in() -> None:
    """Never run: `main` builds the real command when the command line names it."""


def _add_module(root_app: typer.Typer, module_name: str) -> None:
    """Add the commands of one command module to the root app."""
    module = _module(module_name)
    register = getattr(module, "register", None)
    if register is not None:
        register(root_app)
        return
    # A module that is one Typer group, added under its one name.
    (name, command), *_ = ((n, c) for n, c in COMMANDS.items() if c.module == module_name)
    group: typer.Typer = module.app
    group.rich_markup_mode = None
    # The group objects live as long as the process: add a joined command, a nested group, once.
    for joined_module, attribute in command.joined:
        joined: typer.Typer = getattr(_module(joined_module), attribute)
        for info in joined.registered_commands:
            if all(known.name != info.name for known in group.registered_commands):
                group.registered_commands.append(info)
    for nested_name, nested_module, attribute in command.nested:
        nested: typer.Typer = getattr(_module(nested_module), attribute)
        nested.rich_markup_mode = None
        if all(info.name != nested_name for info in group.registered_groups):
            group.add_typer(nested, name=nested_name)
    root_app.add_typer(group, name=name)


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"kaic.cli.{name}")


def command_named(argv: list[str]) -> str | None:
    """The top-level command `argv` runs, or None when it runs none (a `--help` before any
    command, no command at all, or one kaic does not have): then the list is shown."""
    words = iter(argv)
    for word in words:
        if word in ("-h", "--help"):
            return None
        if word in ("-p", "--profile"):
            next(words, None)
        elif word.startswith("-"):
            continue
        else:
            return word if word in COMMANDS else None
    return None


_full_app: typer.Typer | None = None


def __getattr__(name: str) -> typer.Typer:
    # `from kaic.cli.main import app`: the root app with every command, built once.
    global _full_app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _full_app is None:
        _full_app = build_app()
    return _full_app


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
    argv = sys.argv[1:]
    if argv == ["--version"]:
        # Answer without building any command (scripts call this in loops).
        print(f"kaic {__version__}")
        return
    if "_KAIC_COMPLETE" in os.environ:  # shell completion: it walks the whole tree
        cli = build_app()
    else:
        name = command_named(argv)
        cli = build_app([name]) if name else build_app(listing=True)
    # httpx imports its own command line (click, rich) when click is installed, as it is
    # for uvicorn: 40 ms kaic never uses. A None entry makes that import fail at once, and
    # httpx then goes without it.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    interrupt.install()
    context = AppContext(argv=argv)
    try:
        if "--json" in argv or any(a.startswith("--json=") for a in argv):
            from kaic.cli.json_fields import split_json_fields

            argv, context.output.fields = split_json_fields(argv)
            context.argv = argv
        cli(args=argv, prog_name="kaic", obj=context)
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
