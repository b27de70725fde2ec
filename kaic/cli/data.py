"""`kaic data push/pull/ls/rm`: stage data to and from center storage over SFTP.

Thin commands: parse, resolve the SSH target, call `kaic.staging`, render. paramiko and rich
are imported inside the commands (the CLI must start fast).
"""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kaic.cli.context import AppContext, get_app
from kaic.cli.options import JsonOpt
from kaic.errors import KaicError, Rejected, UsageError
from kaic.text import visible

if TYPE_CHECKING:
    from kaic.staging.connect import SshTarget
    from kaic.staging.plan import SyncPlan
    from kaic.staging.remote_fs import ChecksumsFn
    from kaic.staging.transfer import SyncOptions, SyncResult

    #: where to log in, and the center's checksums (None without a center)
    Target = tuple[SshTarget, ChecksumsFn | None]

app = typer.Typer(
    help="Stage data to and from center storage (SFTP; resumable, sha256-verified).\n\n"
    "Remote paths are POSIX paths on center storage; relative paths are from your home there.",
    no_args_is_help=True,
)

ParallelOpt = Annotated[
    int, typer.Option("--parallel", min=1, max=16, help="SSH connections to use.")
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

_ENV_HELP = (
    "Without a center (operators, tests), set KAIC_SSH_HOST, KAIC_SSH_PORT, KAIC_SSH_USER, "
    "KAIC_SSH_KEY, KAIC_SSH_CERT and KAIC_SSH_KNOWN_HOSTS (a known_hosts file)."
)


# -- target resolution ----------------------------------------------------------------------


def _env_target() -> SshTarget | None:
    host = os.environ.get("KAIC_SSH_HOST")
    if not host:
        return None
    from kaic.staging.connect import SshTarget

    key = os.environ.get("KAIC_SSH_KEY")
    if not key:
        raise UsageError("KAIC_SSH_HOST is set but KAIC_SSH_KEY is not", hint=_ENV_HELP)
    try:
        port = int(os.environ.get("KAIC_SSH_PORT") or 22)
    except ValueError as exc:
        raise UsageError("KAIC_SSH_PORT must be a number") from exc
    lines: list[str] = []
    known = os.environ.get("KAIC_SSH_KNOWN_HOSTS")
    if known:
        try:
            with open(known, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read KAIC_SSH_KNOWN_HOSTS {known}: {exc}") from exc
    return SshTarget(
        host=host,
        port=port,
        username=os.environ.get("KAIC_SSH_USER") or getpass.getuser(),
        key_path=key,
        cert_path=os.environ.get("KAIC_SSH_CERT") or None,
        known_hosts_lines=lines,
    )


def resolve_target(app_: AppContext) -> Target:
    """The SSH target (env override, else the center's staging info + an SSH certificate),
    and the center's batched checksums (what verifies a transfer on a host without exec)."""
    target = _env_target()
    if target is not None:
        return target, None
    session = app_.session()
    from kaic.auth.ssh import ensure_identity, known_hosts_lines, staging_info
    from kaic.staging.connect import SshTarget

    info = staging_info(session.client)
    identity = ensure_identity(session.client, session.profile)
    target = SshTarget(
        host=info.host,
        port=info.port,
        username=info.username,
        key_path=identity.key_path,
        cert_path=identity.cert_path,
        known_hosts_lines=list(known_hosts_lines(info)),
    )
    from kaic.client.staging import FileChecksumsClient

    return target, FileChecksumsClient(session.client)


# -- progress -------------------------------------------------------------------------------


@contextmanager
def transfer_progress(app_: AppContext, enabled: bool) -> Iterator[tuple[Any, Any, Any]]:
    """(on_plan, progress, on_status) callbacks drawing a rich bar on stderr; no-ops when
    disabled. `on_status("reconnecting…")` shows what the sync waits for in the bar."""
    if not enabled or not app_.stderr.isatty() or os.environ.get("TERM") == "dumb":
        yield None, None, None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(file=app_.stderr),
        transient=True,
    )
    state: dict[str, Any] = {"task": None, "files": 0, "total": 0, "status": None}

    def describe() -> str:
        return state["status"] or f"{state['files']}/{state['total']} files"

    def on_plan(plan: SyncPlan) -> None:
        state["total"] = len(plan.transfers)
        state["task"] = bar.add_task(describe(), total=max(plan.bytes_to_transfer, 1))

    def progress(nbytes: int, nfiles: int) -> None:
        if state["task"] is None:
            return
        state["files"] += nfiles
        if nbytes or nfiles:
            state["status"] = None
        bar.update(state["task"], advance=nbytes, description=describe())

    def on_status(status: str | None) -> None:
        state["status"] = status
        if state["task"] is not None:
            bar.update(state["task"], description=describe())

    with bar:
        yield on_plan, progress, on_status


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


def _split(paths: list[str], what: str) -> tuple[list[str], str]:
    if len(paths) < 2:
        raise UsageError(f"give at least one source and a destination ({what})")
    return paths[:-1], paths[-1]


def describe_result(result: SyncResult) -> str:
    """One line: what a finished sync did."""
    rate = result.bytes_transferred / result.seconds / 1e6 if result.seconds else 0.0
    return (
        f"{result.files_transferred} transferred, {result.files_skipped} unchanged, "
        f"{result.files_deleted} deleted; {result.bytes_transferred} bytes in "
        f"{result.seconds:.1f} s ({rate:.1f} MB/s)"
        + ("; sha256 verified" if result.verified and result.files_transferred else "")
    )


def _render(app_: AppContext, result: SyncResult, json_out: bool, direction: str) -> None:

    plan = result.plan
    if result.dry_run and plan is not None and not json_out:
        for task in plan.transfers:
            app_.out(f"{direction} {visible(task.src)} -> {visible(task.dst)} ({task.size} bytes)")
        for path in plan.delete_files:
            app_.out(f"delete {visible(path)}")
        for path in plan.delete_dirs:
            app_.out(f"delete {visible(path)}/")
    if json_out:
        app_.json(result.summary())
    elif not result.dry_run:
        app_.info(describe_result(result))
    else:
        app_.info(
            f"dry run: {len(plan.transfers) if plan else 0} to transfer, "
            f"{result.files_skipped} unchanged, {result.files_deleted} to delete"
        )
    failed = failures_error(app_, result)
    if failed is not None:
        raise failed


def failures_error(app_: AppContext, result: SyncResult, what: str = "") -> KaicError | None:
    """Warn about each file that failed; the error to exit with, None when none failed:
    `Rejected` (exit 6) when the staging host refused every one of them, else exit 1."""
    if not result.failures:
        return None
    from kaic.staging.transfer import TransferFailed

    for path, reason in sorted(result.failures.items()):
        app_.warn(f"{path}: {reason}")
    of = f" of {what}" if what else ""
    if result.refused and len(result.refused) == len(result.failures):
        refused = sorted(result.refused.values())
        named = refused[0] if len(refused) == 1 else f"{len(refused)} files (first {refused[0]})"
        return Rejected(
            f"permission denied on the staging host{of}: {named}",
            hint="choose a remote path your account may write to and read "
            "(relative paths start in your home there)",
        )
    return TransferFailed(
        f"{len(result.failures)} file(s){of} failed",
        hint="run the same command again; unchanged and finished files are skipped",
    )


def run_sync(
    app_: AppContext,
    target: Target,
    push: bool,
    sources: list[str],
    dest: str,
    options: SyncOptions,
    *,
    show_progress: bool,
) -> SyncResult:
    """One push or pull to/from `target` (from `resolve_target`), with a progress bar."""
    from kaic.staging import transfer

    ssh_target, checksums_fn = target
    run = transfer.push if push else transfer.pull
    with transfer_progress(app_, show_progress) as (on_plan, progress, on_status):
        return run(
            ssh_target,
            sources,
            dest,
            options,
            progress=progress,
            on_plan=on_plan,
            on_status=on_status,
            warn=app_.warn,
            checksums_fn=checksums_fn,
            sleep=app_.sleep,
        )


def _run_sync(
    ctx: typer.Context,
    push: bool,
    paths: list[str],
    options: SyncOptions,
    json_out: bool,
) -> None:
    app_ = get_app(ctx)
    sources, dest = _split(paths, "push LOCAL... REMOTE" if push else "pull REMOTE... LOCAL")
    show = not json_out and not options.dry_run
    result = run_sync(app_, resolve_target(app_), push, sources, dest, options, show_progress=show)
    _render(app_, result, json_out, "send" if push else "fetch")


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
    _run_sync(
        ctx,
        True,
        paths,
        _options(parallel, exclude, delete, dry_run, checksum, no_verify),
        json_out,
    )


@app.command("pull")
def pull_cmd(
    ctx: typer.Context,
    paths: Annotated[
        list[str],
        typer.Argument(
            metavar="REMOTE... LOCAL", help="Remote files/directories, then the local destination."
        ),
    ],
    parallel: ParallelOpt = 2,
    exclude: ExcludeOpt = None,
    delete: DeleteOpt = False,
    dry_run: DryRunOpt = False,
    checksum: ChecksumOpt = False,
    no_verify: NoVerifyOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Download from center storage (same semantics and options as push).

    Examples:
      kaic data pull results/run-42 ./results
      kaic data pull checkpoints/last.pt . --json
    """
    _run_sync(
        ctx,
        False,
        paths,
        _options(parallel, exclude, delete, dry_run, checksum, no_verify),
        json_out,
    )


# -- ls / rm --------------------------------------------------------------------------------


def _format_time(mtime: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(mtime))


@app.command("ls")
def ls_cmd(
    ctx: typer.Context,
    remote: Annotated[str, typer.Argument(help="Remote directory or file; default: home.")] = "",
    long: Annotated[bool, typer.Option("--long", "-l", help="Mode, size and mtime too.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """List a directory on center storage.

    Examples:
      kaic data ls
      kaic data ls datasets -l
      kaic data ls results --json
    """
    app_ = get_app(ctx)
    target, _ = resolve_target(app_)
    from kaic.staging.connect import open_sftp
    from kaic.staging.remote_fs import list_remote

    conn = open_sftp(target)
    try:
        entries = list_remote(conn.sftp, remote)
    finally:
        conn.close()
    if json_out:
        app_.json([e.to_json() for e in entries])
        return
    for e in entries:
        name = visible(e.name) + ("/" if e.type == "dir" else "")
        if long:
            app_.out(f"{e.mode} {e.size:>14} {_format_time(e.mtime)} {name}")
        else:
            app_.out(name)


@app.command("rm")
def rm_cmd(
    ctx: typer.Context,
    remotes: Annotated[
        list[str], typer.Argument(metavar="REMOTE...", help="Remote files (directories with -r).")
    ],
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Remove directories and their contents.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Remove files or directories from center storage (never `/` or your home itself).

    Examples:
      kaic data rm results/old.log
      kaic data rm -r datasets/scratch
    """
    app_ = get_app(ctx)
    target, _ = resolve_target(app_)
    from kaic.staging.connect import open_sftp
    from kaic.staging.remote_fs import remove_remote

    conn = open_sftp(target)
    try:
        removed = remove_remote(conn.sftp, remotes, recursive=recursive)
    finally:
        conn.close()
    if json_out:
        app_.json({"removed": removed, "paths": remotes})
    else:
        app_.info(f"removed {removed} entr{'y' if removed == 1 else 'ies'}")
