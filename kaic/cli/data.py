"""`kaic data push/pull/ls/rm`: stage data to and from center storage over SFTP.

Thin commands: parse, call the flow (`kaic.flows.data`: SSH target, sync, listing), render.
paramiko and rich are imported inside the commands (the CLI must start fast).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer

from kaic.cli import complete
from kaic.cli.context import AppContext, get_app
from kaic.cli.options import JqOpt, JsonOpt
from kaic.humanize import size
from kaic.text import visible

if TYPE_CHECKING:
    from kaic.staging.transfer import SyncOptions, SyncResult

app = typer.Typer(
    help="Stage data to and from center storage (SFTP; resumable, sha256-verified).\n\n"
    "Remote paths are POSIX paths on center storage; relative paths are from your home there.",
    no_args_is_help=True,
)

ParallelOpt = Annotated[
    int,
    typer.Option(
        "--parallel",
        min=1,
        max=16,
        help="SSH connections to use, at most (a pull from a host under 5 ms away uses one).",
    ),
]
ExcludeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--exclude",
        help="Skip paths matching this gitignore-style pattern (repeatable); "
        "a .kaicignore file in a source directory is read too.",
    ),
]
DeleteOpt = Annotated[
    bool, typer.Option("--delete", help="Delete destination files that are not in the source.")
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Show what would be sent and deleted; change nothing.")
]
ChecksumOpt = Annotated[
    bool,
    typer.Option("--checksum", help="Compare files by sha256 instead of size and mtime."),
]
NoVerifyOpt = Annotated[
    bool,
    typer.Option("--no-verify", help="Do not check each transferred file's sha256 afterwards."),
]

# -- push / pull ----------------------------------------------------------------------------


def _options(
    parallel: int,
    exclude: list[str] | None,
    delete: bool,
    dry_run: bool,
    checksum: bool,
    no_verify: bool,
) -> SyncOptions:
    from kaic.staging.transfer import SyncOptions

    return SyncOptions(
        parallel=parallel,
        excludes=list(exclude or []),
        delete=delete,
        dry_run=dry_run,
        checksum=checksum,
        verify=not no_verify,
    )


def _render(app_: AppContext, result: SyncResult, direction: str) -> None:
    """The sync's summary (JSON), or its lines: what a dry run would do, or what it did."""
    from kaic.flows.data import describe_result, failures_error

    def human() -> None:
        plan = result.plan
        if not result.dry_run:
            app_.info(describe_result(result))
            return
        if plan is not None:
            for task in plan.transfers:
                app_.out(
                    f"{direction} {visible(task.src)} -> {visible(task.dst)} ({size(task.size)})"
                )
            for path in plan.delete_files:
                app_.out(f"delete {visible(path)}")
            for path in plan.delete_dirs:
                app_.out(f"delete {visible(path)}/")
        app_.info(
            f"dry run: {len(plan.transfers) if plan else 0} to transfer, "
            f"{result.files_skipped} unchanged, {result.files_deleted} to delete"
        )

    app_.emit(result.summary(), human)
    failed = failures_error(result, app_.warn)
    if failed is not None:
        raise failed


def _sync(ctx: typer.Context, push: bool, paths: list[str], options: SyncOptions) -> None:
    from kaic.flows.data import sync

    app_ = get_app(ctx)
    # The bar is drawn on stderr; a --json run (CI) and a dry run need none.
    show = not app_.output.json and not options.dry_run
    result = sync(app_.session, push, paths, options, app_.ui(), show_progress=show)
    _render(app_, result, "send" if push else "fetch")


@app.command("push")
def push_cmd(
    ctx: typer.Context,
    paths: Annotated[
        list[str],
        typer.Argument(
            metavar="LOCAL... REMOTE", help="Local files/directories, then the remote destination."
        ),
    ],
    parallel: ParallelOpt = 2,
    exclude: ExcludeOpt = None,
    delete: DeleteOpt = False,
    dry_run: DryRunOpt = False,
    checksum: ChecksumOpt = False,
    no_verify: NoVerifyOpt = False,
    json_out: JsonOpt = False,
    jq: JqOpt = None,
) -> None:
    """Upload to center storage, like `rsync -a`: unchanged files skipped, partial files
    resumed, every transferred file sha256-verified.

    A directory's contents go into REMOTE (created if missing); a file goes into REMOTE if
    it ends with / or is a directory, else REMOTE is its new name.

    Examples:
      kaic data push ./dataset datasets/imagenet --exclude '*.tmp'
      kaic data push model.pt results/ --json
      kaic data push ./code project/code --delete --dry-run
    """
    _sync(ctx, True, paths, _options(parallel, exclude, delete, dry_run, checksum, no_verify))


@app.command("pull")
def pull_cmd(
    ctx: typer.Context,
    paths: Annotated[
        list[str],
        typer.Argument(
            metavar="REMOTE... LOCAL",
            help="Remote files/directories, then the local destination.",
            autocompletion=complete.remote_paths,
        ),
    ],
    parallel: ParallelOpt = 2,
    exclude: ExcludeOpt = None,
    delete: DeleteOpt = False,
    dry_run: DryRunOpt = False,
    checksum: ChecksumOpt = False,
    no_verify: NoVerifyOpt = False,
    json_out: JsonOpt = False,
    jq: JqOpt = None,
) -> None:
    """Download from center storage (same semantics and options as push).

    Examples:
      kaic data pull results/run-42 ./results
      kaic data pull checkpoints/last.pt . --json
    """
    _sync(ctx, False, paths, _options(parallel, exclude, delete, dry_run, checksum, no_verify))


# -- ls / rm --------------------------------------------------------------------------------


def _format_time(mtime: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(mtime))


@app.command("ls")
def ls_cmd(
    ctx: typer.Context,
    remote: Annotated[
        str,
        typer.Argument(
            help="Remote directory or file; default: home.", autocompletion=complete.remote_paths
        ),
    ] = "",
    long: Annotated[bool, typer.Option("--long", "-l", help="Mode, size and mtime too.")] = False,
    json_out: JsonOpt = False,
    jq: JqOpt = None,
) -> None:
    """List a directory on center storage.

    Examples:
      kaic data ls
      kaic data ls datasets -l
      kaic data ls results --json
    """
    from kaic.flows.data import list_remote

    app_ = get_app(ctx)
    entries = list_remote(app_.session, remote)

    def human() -> None:
        for e in entries:
            name = visible(e.name) + ("/" if e.type == "dir" else "")
            if long:
                app_.out(f"{e.mode} {size(e.size):>8} {_format_time(e.mtime)} {name}")
            else:
                app_.out(name)

    app_.emit([e.to_json() for e in entries], human)


@app.command("rm")
def rm_cmd(
    ctx: typer.Context,
    remotes: Annotated[
        list[str],
        typer.Argument(
            metavar="REMOTE...",
            help="Remote files (directories with -r).",
            autocompletion=complete.remote_paths,
        ),
    ],
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Remove directories and their contents.")
    ] = False,
    json_out: JsonOpt = False,
    jq: JqOpt = None,
) -> None:
    """Remove files or directories from center storage (never `/` or your home itself).

    Examples:
      kaic data rm results/old.log
      kaic data rm -r datasets/scratch
    """
    from kaic.flows.data import remove_remote

    app_ = get_app(ctx)
    removed = remove_remote(app_.session, remotes, recursive=recursive)
    app_.emit(
        {"removed": removed, "paths": remotes},
        lambda: app_.info(f"removed {removed} entr{'y' if removed == 1 else 'ies'}"),
    )
